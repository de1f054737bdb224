// The work item of one CTA of the warp-specialised GNA forward kernels: its Q tile (one axis
// tile per axis from the launch tables), batch entry and heads, and the KV tiles it visits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "gna/fwd_device.cuh"
#include "gna/fwd_params.h"

namespace jaxk::gna {

// Everything a CTA knows about its work item.
// Work items are numbered Q tile fastest, then head, then batch entry: CTAs running together
// share K/V in L2. Within one (batch, head), Q tiles are numbered along the axis order that
// jax_gna/tiling.py's tile_order picks (so that the K/V the running CTAs read stays in L2);
// `tile_stride` is the number step of one tile along each axis.
struct WorkTile {
  AxisTile ax[3];
  int64_t batch;
  int head;
  int head_kv;
  int num_kv;     // KV tiles visited (KvTileCursor walks them)
  bool has_next;  // the CTA has another work item after this one (persistent kernel)

  // First token of KV tile `kt` (raster index in one batch entry) and, per axis, how many of
  // its rows lie inside the group (the tile is interior when all of them do).
  __device__ __forceinline__ int64_t KvTileStart(const int (&kt)[3], const FwdParams& p,
                                                 int (&limit)[3], bool& interior) const {
    int64_t x[3];
    interior = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const int j0 = kt[a] << p.kv_shift[a];
      x[a] = int64_t(j0) * p.dil[a] + ax[a].group;
      limit[a] = ax[a].n_g - j0;
      interior = interior && limit[a] >= (1 << p.kv_shift[a]);
    }
    return (x[0] * p.n[1] + x[1]) * p.n[2] + x[2];
  }

  // Token of row r of the Q tile; false for padding.
  __device__ __forceinline__ bool QToken(int r, const FwdParams& p, int64_t& token) const {
    int c[3], j[3];
    SplitRow(r, p.q_shift, c);
#pragma unroll
    for (int a = 0; a < 3; ++a) j[a] = ax[a].q_start + c[a];
    return TokenOf(j, ax, p, token);
  }
};

// Walks a work item's KV tiles in visiting order (axis 2 fastest, then 1, then 0) without
// divisions: the consumers need each tile's coordinates right after their GEMMs, where two
// integer divisions per tile cost 14% of the dense case's stall samples (Nsight Compute, H100).
struct KvTileCursor {
  int kt[3];  // the current tile, per axis
  int lo1, hi1, lo2, hi2;

  __device__ __forceinline__ explicit KvTileCursor(const WorkTile& w)
      : kt{w.ax[0].kv_lo, w.ax[1].kv_lo, w.ax[2].kv_lo},
        lo1(w.ax[1].kv_lo),
        hi1(w.ax[1].kv_hi),
        lo2(w.ax[2].kv_lo),
        hi2(w.ax[2].kv_hi) {}

  // Whether the current tile lies inside every query's window on every axis (no mask needed).
  __device__ __forceinline__ bool Unmasked(const int (&full_lo)[3], const int (&full_hi)[3]) const {
    return (kt[0] >= full_lo[0]) & (kt[0] < full_hi[0]) & (kt[1] >= full_lo[1]) &
           (kt[1] < full_hi[1]) & (kt[2] >= full_lo[2]) & (kt[2] < full_hi[2]);
  }

  __device__ __forceinline__ void Advance() {
    if (++kt[2] < hi2) return;
    kt[2] = lo2;
    if (++kt[1] < hi1) return;
    kt[1] = lo1;
    ++kt[0];
  }
};

// Work item `work` (< 2^31: the launchers check): 32-bit index arithmetic, since 64-bit divisions
// would lengthen the prologue every tile waits for.
__device__ __forceinline__ void LoadWork(const FwdParams& p, int work, WorkTile& w) {
  const int q_tiles = static_cast<int>(p.q_tiles);
  int tile = work % q_tiles;
  work /= q_tiles;
  w.head = work % p.heads_q;
  w.batch = work / p.heads_q;
  w.head_kv = w.head / (p.heads_q / p.heads_kv);
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    const int idx = tile / p.tile_stride[a] % p.num_tiles[a];
    w.ax[a] = LoadAxisTile(p.tables + p.axis_off[a] + 8 * idx);
  }
  w.num_kv = 1;
#pragma unroll
  for (int a = 0; a < 3; ++a) w.num_kv *= w.ax[a].kv_hi - w.ax[a].kv_lo;
  w.has_next = false;
}

}  // namespace jaxk::gna
