// XLA FFI handler of the GNA forward kernel: checks shapes, fills FwdParams, dispatches on
// (dtype, head_dim). Leading dimensions before [*spatial, heads, head_dim] are all batch, so
// vmap (vmap_method="broadcast_all") folds into the batch for free.
#include "gna/fwd_handler.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "gna/fwd_params.h"
#include "gna/fwd_tma_host.h"
#include "xla/ffi/api/ffi.h"

namespace jaxk::gna {
namespace {

namespace ffi = xla::ffi;

using LseResult = ffi::Result<ffi::Buffer<ffi::F32>>;
using Tables = ffi::Buffer<ffi::S32>;

int Log2Exact(int64_t x) {
  int s = 0;
  while ((int64_t{1} << s) < x) ++s;
  return (int64_t{1} << s) == x ? s : -1;
}

ffi::Error CudaError(cudaError_t err) {
  return ffi::Error::Internal(std::string("gna_fwd: CUDA error: ") + cudaGetErrorString(err));
}

// The persistent schedule of the TMA kernel: one CTA per SM of the current device (one fits per
// SM) taking work items from a counter in XLA scratch memory, zeroed on the stream. Left off
// (one CTA per work item) when the work items fit in one wave, or with JAXK_GNA_PERSISTENT=0
// (A/B tests; read at every call).
ffi::Error SchedulePersistent(cudaStream_t stream, ffi::ScratchAllocator& scratch, FwdParams& p) {
  p.max_ctas = 0;
  p.work_counter = nullptr;
  if (const char* env = std::getenv("JAXK_GNA_PERSISTENT"); env != nullptr && env[0] == '0') {
    return ffi::Error::Success();
  }
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return CudaError(err);
  if (p.q_tiles * p.heads_q * p.batch <= sms) return ffi::Error::Success();
  const std::optional<void*> counter = scratch.Allocate(sizeof(int32_t), alignof(int32_t));
  if (!counter.has_value()) {
    return ffi::Error::Internal("gna_fwd: no scratch memory for the work-item counter");
  }
  err = cudaMemsetAsync(*counter, 0, sizeof(int32_t), stream);
  if (err != cudaSuccess) return CudaError(err);
  p.max_ctas = sms;
  p.work_counter = static_cast<int32_t*>(*counter);
  return ffi::Error::Success();
}

// One launcher per (dtype, head_dim); head_dim 256 runs the non-specialised kernel. `tma`
// (null: cp.async producer) is only read by the warp-specialised kernel.
cudaError_t Dispatch(ffi::DataType dtype, int64_t head_dim, const FwdParams& params,
                     const FwdTmaMaps* tma, cudaStream_t stream, bool* found) {
  *found = true;
  if (dtype == ffi::DataType::BF16) {
    switch (head_dim) {
      case 32:
        return LaunchFwdBf16_D32(params, tma, stream);
      case 64:
        return LaunchFwdBf16_D64(params, tma, stream);
      case 128:
        return LaunchFwdBf16_D128(params, tma, stream);
      case 256:
        return LaunchFwdBf16_D256(params, tma, stream);
    }
  } else if (dtype == ffi::DataType::F16) {
    switch (head_dim) {
      case 32:
        return LaunchFwdF16_D32(params, tma, stream);
      case 64:
        return LaunchFwdF16_D64(params, tma, stream);
      case 128:
        return LaunchFwdF16_D128(params, tma, stream);
      case 256:
        return LaunchFwdF16_D256(params, tma, stream);
    }
  }
  *found = false;
  return cudaSuccess;
}

ffi::Error GnaFwdImpl(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q,
                      ffi::AnyBuffer k, ffi::AnyBuffer v, Tables tables,
                      ffi::Result<ffi::AnyBuffer> out, LseResult lse, int64_t rank, int64_t q_tile0,
                      int64_t q_tile1, int64_t q_tile2, int64_t kv_tile0, int64_t kv_tile1,
                      int64_t kv_tile2, int64_t dil0, int64_t dil1, int64_t dil2,
                      int64_t num_tiles0, int64_t num_tiles1, int64_t num_tiles2, int64_t axis_off0,
                      int64_t axis_off1, int64_t axis_off2, int64_t tile_order0,
                      int64_t tile_order1, int64_t tile_order2, float scale) {
  const auto qd = q.dimensions();
  const auto kd = k.dimensions();
  const int64_t nd = static_cast<int64_t>(qd.size());
  if (rank < 1 || rank > 3 || nd < rank + 3) {
    return ffi::Error::InvalidArgument("gna_fwd: expected [batch..., *spatial, heads, head_dim]");
  }
  if (kd.size() != qd.size() || v.dimensions().size() != qd.size() ||
      q.element_type() != k.element_type() || q.element_type() != v.element_type()) {
    return ffi::Error::InvalidArgument("gna_fwd: q, k, v must have the same rank and dtype");
  }
  FwdParams p{};
  p.batch = 1;
  for (int64_t i = 0; i < nd - rank - 2; ++i) {
    if (qd[i] != kd[i]) return ffi::Error::InvalidArgument("gna_fwd: batch dims differ");
    p.batch *= qd[i];
  }
  const int64_t first_spatial = nd - rank - 2;
  for (int a = 0; a < 3; ++a) p.n[a] = 1;
  for (int64_t i = 0; i < rank; ++i) {
    if (qd[first_spatial + i] != kd[first_spatial + i]) {
      return ffi::Error::InvalidArgument("gna_fwd: q and k token grids differ");
    }
    p.n[3 - rank + i] = static_cast<int32_t>(qd[first_spatial + i]);
  }
  const int64_t head_dim = qd[nd - 1];
  p.heads_q = static_cast<int32_t>(qd[nd - 2]);
  p.heads_kv = static_cast<int32_t>(kd[nd - 2]);
  if (kd[nd - 1] != head_dim || v.dimensions()[nd - 1] != head_dim || p.heads_kv < 1 ||
      p.heads_q % p.heads_kv != 0) {
    return ffi::Error::InvalidArgument(
        "gna_fwd: head_dim must match and heads_q must be a multiple of heads_kv");
  }
  const int64_t q_tile[3] = {q_tile0, q_tile1, q_tile2};
  const int64_t kv_tile[3] = {kv_tile0, kv_tile1, kv_tile2};
  const int64_t dil[3] = {dil0, dil1, dil2};
  const int64_t num_tiles[3] = {num_tiles0, num_tiles1, num_tiles2};
  const int64_t axis_off[3] = {axis_off0, axis_off1, axis_off2};
  p.q_tiles = 1;
  for (int a = 0; a < 3; ++a) {
    p.q_shift[a] = Log2Exact(q_tile[a]);
    p.kv_shift[a] = Log2Exact(kv_tile[a]);
    if (p.q_shift[a] < 0 || p.kv_shift[a] < 0) {
      return ffi::Error::InvalidArgument("gna_fwd: tile extents must be powers of two");
    }
    p.dil[a] = static_cast<int32_t>(dil[a]);
    p.num_tiles[a] = static_cast<int32_t>(num_tiles[a]);
    p.axis_off[a] = static_cast<int32_t>(axis_off[a]);
    p.q_tiles *= num_tiles[a];
  }
  // The Q-tile numbering (fastest axis first): a permutation of the three axes.
  // JAXK_GNA_TILE_ORDER=raster (A/B tests, read at every call) numbers them axis 2 fastest.
  int64_t order[3] = {tile_order0, tile_order1, tile_order2};
  if (const char* env = std::getenv("JAXK_GNA_TILE_ORDER");
      env != nullptr && std::strcmp(env, "raster") == 0) {
    order[0] = 2;
    order[1] = 1;
    order[2] = 0;
  }
  bool seen[3] = {false, false, false};
  int64_t stride = 1;
  for (int i = 0; i < 3; ++i) {
    if (order[i] < 0 || order[i] > 2 || seen[order[i]]) {
      return ffi::Error::InvalidArgument("gna_fwd: tile_order must be a permutation of 0, 1, 2");
    }
    seen[order[i]] = true;
    p.tile_stride[order[i]] = static_cast<int32_t>(stride);
    stride *= num_tiles[order[i]];
  }
  p.q = q.untyped_data();
  p.k = k.untyped_data();
  p.v = v.untyped_data();
  p.o = out->untyped_data();
  p.lse = lse->typed_data();
  p.tables = tables.typed_data();
  p.scale = scale;
  p.scale_log2 = scale * 1.4426950408889634f;

  // The TMA producer where it applies (JAXK_GNA_FORCE_CPASYNC=1 forces cp.async for A/B tests);
  // JAXK_GNA_DEBUG=1 reports the choice on stderr.
  FwdTmaMaps maps;
  const bool bf16 = q.element_type() == ffi::DataType::BF16;
  const char* no_tma = PrepareTmaMaps(p, head_dim, bf16, &maps);
  if (no_tma == nullptr) {
    if (ffi::Error err = SchedulePersistent(stream, scratch, p); err.failure()) return err;
  }
  if (const char* debug = std::getenv("JAXK_GNA_DEBUG"); debug != nullptr && debug[0] == '1') {
    std::fprintf(stderr, "jaxk_gna_fwd: head_dim %lld, %s producer%s%s",
                 static_cast<long long>(head_dim), no_tma ? "cp.async" : "TMA", no_tma ? ": " : "",
                 no_tma ? no_tma : "");
    if (p.max_ctas > 0) std::fprintf(stderr, ", persistent (%d CTAs at most)", p.max_ctas);
    std::fprintf(stderr, ", Q tiles numbered axis %lld fastest, then %lld, then %lld\n",
                 static_cast<long long>(order[0]), static_cast<long long>(order[1]),
                 static_cast<long long>(order[2]));
  }
  bool found = false;
  const cudaError_t err =
      Dispatch(q.element_type(), head_dim, p, no_tma ? nullptr : &maps, stream, &found);
  if (!found) {
    return ffi::Error::InvalidArgument(
        "gna_fwd: no kernel for this dtype/head_dim (need bf16 or "
        "f16 and head_dim 32, 64, 128 or 256)");
  }
  if (err != cudaSuccess) return CudaError(err);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GnaFwd, GnaFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<ffi::AnyBuffer>()         // q
                                  .Arg<ffi::AnyBuffer>()         // k
                                  .Arg<ffi::AnyBuffer>()         // v
                                  .Arg<Tables>()                 // launch tables (int32)
                                  .Ret<ffi::AnyBuffer>()         // out
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lse
                                  .Attr<int64_t>("rank")
                                  .Attr<int64_t>("q_tile0")
                                  .Attr<int64_t>("q_tile1")
                                  .Attr<int64_t>("q_tile2")
                                  .Attr<int64_t>("kv_tile0")
                                  .Attr<int64_t>("kv_tile1")
                                  .Attr<int64_t>("kv_tile2")
                                  .Attr<int64_t>("dil0")
                                  .Attr<int64_t>("dil1")
                                  .Attr<int64_t>("dil2")
                                  .Attr<int64_t>("num_tiles0")
                                  .Attr<int64_t>("num_tiles1")
                                  .Attr<int64_t>("num_tiles2")
                                  .Attr<int64_t>("axis_off0")
                                  .Attr<int64_t>("axis_off1")
                                  .Attr<int64_t>("axis_off2")
                                  .Attr<int64_t>("tile_order0")
                                  .Attr<int64_t>("tile_order1")
                                  .Attr<int64_t>("tile_order2")
                                  .Attr<float>("scale"));

}  // namespace jaxk::gna
