// Launch parameters of the GNA forward kernel and the per-configuration launch functions.
// Plain C++ (no CuTe), shared by the FFI handler and the kernel translation units.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace jaxk::gna {

// Tensors are [batch, n0, n1, n2, heads, head_dim] (rank padded to 3 by leading axes of length 1);
// lse is [batch, n0, n1, n2, heads_q]. The neighbourhood is described only by `tables`
// (see jax_gna/tiling.py): 8-int axis-tile entries per axis, then per-group window tables.
struct FwdParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;
  const int32_t* tables;
  int32_t* work_counter;  // persistent kernel: work items handed out after the first (zeroed)
  int64_t batch;
  int64_t q_tiles;  // num_tiles[0] * num_tiles[1] * num_tiles[2]
  int32_t heads_q;
  int32_t heads_kv;
  int32_t n[3];         // spatial extents
  int32_t dil[3];       // dilations
  int32_t q_shift[3];   // log2 of the Q tile extent per axis
  int32_t kv_shift[3];  // log2 of the KV tile extent per axis
  int32_t num_tiles[3];
  int32_t tile_stride[3];  // per axis: Q-tile number step of one tile along it (tile order)
  int32_t axis_off[3];     // offset of each axis's entries in `tables`
  int32_t max_ctas;        // TMA kernel (persistent): CTAs launched at most; 0: one per work item
  float scale;             // softmax scale (natural units)
  float scale_log2;        // scale * log2(e)
};

// Tensor maps of the TMA kernel, built on the host per call (fwd_tma_host.h). Each views its
// tensor as 5-D, innermost first: (heads * head_dim, n2, n1, n0, batch). `o` is the output's,
// for the consumers' bulk stores: its box is half a Q tile (one consumer's 64 rows).
struct FwdTmaMaps {
  CUtensorMap q;
  CUtensorMap k;
  CUtensorMap v;
  CUtensorMap o;
};

// The axis whose Q-tile extent holds bit 6 of a 128-row Q tile's row index (rows are numbered
// axis 2 fastest): halving it splits the tile into the two consumers' 64-row halves.
inline __host__ __device__ int HalfTileAxis(const int32_t (&q_shift)[3]) {
  return q_shift[0] > 0 ? 0 : q_shift[1] > 0 ? 1 : 2;
}

// One function per compiled configuration (element type, head_dim); each lives in its own .cu.
// `tma` (may be null) selects the TMA producer where the configuration has one.
#define JAXK_GNA_FWD_CONFIGS(X) \
  X(Bf16, 32)                   \
  X(Bf16, 64)                   \
  X(Bf16, 128)                  \
  X(Bf16, 256)                  \
  X(F16, 32)                    \
  X(F16, 64)                    \
  X(F16, 128)                   \
  X(F16, 256)

#define JAXK_GNA_DECLARE_FWD(T, D)                                                \
  cudaError_t LaunchFwd##T##_D##D(const FwdParams& params, const FwdTmaMaps* tma, \
                                  cudaStream_t stream);
JAXK_GNA_FWD_CONFIGS(JAXK_GNA_DECLARE_FWD)
#undef JAXK_GNA_DECLARE_FWD

}  // namespace jaxk::gna
