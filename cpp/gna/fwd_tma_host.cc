// Tensor maps of the GNA forward kernel's TMA producer (see fwd_kernel_tma.cuh). The driver's
// cuTensorMapEncodeTiled is reached through the runtime's entry-point query, so the library
// needs no link against libcuda.
#include "gna/fwd_tma_host.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "common/driver_entry.h"
#include "gna/fwd_params.h"

namespace jaxk::gna {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 EncodeTiledFn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    PFN_cuTensorMapEncodeTiled_v12000 f = nullptr;
    return DriverEntry("cuTensorMapEncodeTiled", &f) ? f : nullptr;
  }();
  return fn;
}

bool ForcedCpAsync() {
  const char* env = std::getenv("JAXK_GNA_FORCE_CPASYNC");
  return env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0;
}

// `data` as (heads * head_dim, n2, n1, n0, batch), box (box_cols, 2^shift[2], 2^shift[1],
// 2^shift[0], 1). Sizes were checked by the caller.
bool Encode(PFN_cuTensorMapEncodeTiled_v12000 encode, CUtensorMap* map, const void* data, bool bf16,
            int64_t heads, int64_t head_dim, const FwdParams& p, const int32_t (&shift)[3],
            uint32_t box_cols) {
  constexpr int64_t kElem = 2;
  const cuuint64_t dims[5] = {static_cast<cuuint64_t>(heads * head_dim),
                              static_cast<cuuint64_t>(p.n[2]), static_cast<cuuint64_t>(p.n[1]),
                              static_cast<cuuint64_t>(p.n[0]), static_cast<cuuint64_t>(p.batch)};
  cuuint64_t strides[4];
  strides[0] = dims[0] * kElem;
  for (int i = 1; i < 4; ++i) strides[i] = strides[i - 1] * dims[i];
  const cuuint32_t box[5] = {box_cols, 1u << shift[2], 1u << shift[1], 1u << shift[0], 1u};
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  const CUresult rc = encode(
      map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 5,
      const_cast<void*>(data), dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      box_cols * kElem == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return rc == CUDA_SUCCESS;
}

}  // namespace

const char* PrepareTmaMaps(const FwdParams& p, int64_t head_dim, bool bf16, FwdTmaMaps* maps) {
  if (head_dim != 32 && head_dim != 64 && head_dim != 128) {
    return "head_dim is not 32, 64 or 128";
  }
  if (ForcedCpAsync()) return "forced by JAXK_GNA_FORCE_CPASYNC";
  for (int a = 0; a < 3; ++a) {
    if (p.dil[a] != 1) return "dilation > 1";
  }
  if (p.q_shift[0] + p.q_shift[1] + p.q_shift[2] != 7) return "the Q tile is not 128 tokens";
  for (const void* ptr : {p.q, p.k, p.v, static_cast<const void*>(p.o)}) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return "a tensor is not 16-byte aligned";
  }
  // Coordinates are int32 and the batch stride must stay below 2^40 bytes.
  const int64_t heads = p.heads_q > p.heads_kv ? p.heads_q : p.heads_kv;
  const int64_t row_bytes = heads * head_dim * 2;
  const int64_t batch_bytes = row_bytes * p.n[0] * p.n[1] * p.n[2];
  if (heads * head_dim >= (int64_t{1} << 31) || batch_bytes >= (int64_t{1} << 40) ||
      p.batch >= (int64_t{1} << 31)) {
    return "tensors too large for a tensor map";
  }
  const PFN_cuTensorMapEncodeTiled_v12000 encode = EncodeTiledFn();
  if (encode == nullptr) return "the driver has no cuTensorMapEncodeTiled";
  const uint32_t box_cols = head_dim == 32 ? 32 : 64;  // one swizzle row: 64 or 128 bytes
  int32_t half_shift[3] = {p.q_shift[0], p.q_shift[1], p.q_shift[2]};
  half_shift[HalfTileAxis(p.q_shift)] -= 1;
  if (!Encode(encode, &maps->q, p.q, bf16, p.heads_q, head_dim, p, p.q_shift, box_cols) ||
      !Encode(encode, &maps->k, p.k, bf16, p.heads_kv, head_dim, p, p.kv_shift, box_cols) ||
      !Encode(encode, &maps->v, p.v, bf16, p.heads_kv, head_dim, p, p.kv_shift, box_cols) ||
      !Encode(encode, &maps->o, p.o, bf16, p.heads_q, head_dim, p, half_shift, box_cols)) {
    return "cuTensorMapEncodeTiled rejected the tensors";
  }
  return nullptr;
}

}  // namespace jaxk::gna
