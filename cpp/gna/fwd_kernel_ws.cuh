// Warp-specialised GNA forward kernel for sm_90a with a cp.async producer (the fallback of the TMA
// kernel, fwd_kernel_tma.cuh: dilation, unaligned or oversized tensors, JAXK_GNA_FORCE_CPASYNC).
//
// One CTA = one multi-dimensional 128-token Q tile of one (batch, head); it walks only the KV
// tiles of the tile's neighbourhood box (launch tables, jax_gna/tiling.py) and applies the
// fine-grained mask only to tiles the tables mark as partial.
//
// Warpgroup 0 is the producer: it gathers Q, K and V tiles straight from
// [batch, *spatial, heads, head_dim] with 16-byte cp.async per token row (no permutation pass;
// dilation and GQA are address arithmetic, padded rows are zero-filled) into a three-stage
// shared-memory ring guarded by mbarriers; each thread's copies arrive on the stage's barrier
// when they land (cp.async.mbarrier.arrive.noinc), so the producer only ever waits for free
// stages. Warpgroups 1 and 2 are the consumers (fwd_consumer.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cute/tensor.hpp>

#include "gna/fwd_consumer.cuh"
#include "gna/fwd_device.cuh"
#include "gna/fwd_params.h"
#include "gna/fwd_sync.cuh"
#include "gna/fwd_work.cuh"
#include "gna/fwd_ws_config.cuh"

namespace jaxk::gna {

// `kThreads` threads copy `kRows` token rows of one tile: `row_at(r, offset)` gives the element
// offset of row r and whether it exists (missing rows are zero-filled), `smem_at(r, col)` the
// shared address of element (r, col).
template <class Cfg, int kRows, int kThreads, class RowAt, class SmemAt>
__device__ __forceinline__ void Gather(int thread, const typename Cfg::Element* gmem, RowAt row_at,
                                       SmemAt smem_at) {
  constexpr int kRowsPerPass = kThreads / Cfg::kChunksPerRow;
  static_assert(kRows % kRowsPerPass == 0);
  const int chunk = thread % Cfg::kChunksPerRow;
  const int row0 = thread / Cfg::kChunksPerRow;
#pragma unroll 4
  for (int i = 0; i < kRows / kRowsPerPass; ++i) {
    const int r = row0 + i * kRowsPerPass;
    int64_t offset = 0;
    const bool valid = row_at(r, offset);
    CpAsync16(smem_at(r, chunk * Cfg::kChunk), gmem + (valid ? offset + chunk * Cfg::kChunk : 0),
              valid);
  }
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    GnaFwdWsKernel(const __grid_constant__ FwdParams p) {
  using namespace cute;
  using Element = typename Cfg::Element;
  constexpr int kD = Cfg::kHeadDim;
  constexpr int kBQ = Cfg::kBlockQ;
  constexpr int kBKV = Cfg::kBlockKV;
  constexpr int kS = Cfg::kStages;

  extern __shared__ char smem_raw[];
  const WsSmem<Cfg> sm(smem_raw);
  Tensor sQ = make_tensor(make_smem_ptr(sm.q), typename Cfg::SmemLayoutQ{});  // (q, d)
  Tensor sK = make_tensor(make_smem_ptr(sm.k), typename Cfg::SmemLayoutK{});  // (kv, d, stage)
  Tensor sV = make_tensor(make_smem_ptr(sm.v), typename Cfg::SmemLayoutV{});  // (d, kv, stage)

  // The work item lives in shared memory: it is read rarely and registers are scarce.
  WorkTile& w = sm.Work(0);
  int2* kv_rows = reinterpret_cast<int2*>(sm.base + Cfg::kRowTableOffset);
  const int tid = threadIdx.x;
  if (tid == 0) {
    LoadWork(p, static_cast<int>(blockIdx.x), w);
    // Full barriers count producer threads: each arrives when its own copies land.
    sm.InitBarriers(Cfg::kProducerThreads);
  }
  if (tid < kBKV) {
    // Row r of every KV tile: token offset from the tile's first row (less than the tokens of
    // one batch entry, so int32) and its in-tile coordinates, 8 bits each (extents <= 128).
    int c[3];
    SplitRow(tid, p.kv_shift, c);
    const int64_t rel = (int64_t(c[0]) * p.dil[0] * p.n[1] + int64_t(c[1]) * p.dil[1]) * p.n[2] +
                        int64_t(c[2]) * p.dil[2];
    kv_rows[tid] = make_int2(static_cast<int>(rel), c[0] | (c[1] << 8) | (c[2] << 16));
  }
  __syncthreads();

  // Nothing but shared-memory pointers crosses the register reallocation.
  if (tid < Cfg::kProducerThreads) {
    // ---------------------------------------------------------------- producer warpgroup
    RegDealloc<Cfg::kProducerRegs>();
    const int64_t tokens = int64_t(p.n[0]) * p.n[1] * p.n[2];
    const int64_t q_base = (w.batch * tokens * p.heads_q + w.head) * kD;
    const int64_t q_stride = int64_t(p.heads_q) * kD;
    const int64_t kv_base = (w.batch * tokens * p.heads_kv + w.head_kv) * kD;
    const int64_t kv_stride = int64_t(p.heads_kv) * kD;
    const auto* q = static_cast<const Element*>(p.q);
    const auto* k = static_cast<const Element*>(p.k);
    const auto* v = static_cast<const Element*>(p.v);
    Gather<Cfg, kBQ, Cfg::kProducerThreads>(
        tid, q,
        [&](int r, int64_t& offset) {
          int64_t token;
          const bool valid = w.QToken(r, p, token);
          offset = q_base + token * q_stride;
          return valid;
        },
        [&](int r, int col) { return &sQ(r, col); });
    CpAsyncCommit();
    // Every thread's copies arrive on the stage's full barrier when they land (the producer
    // never waits on memory itself); consumers fence before wgmma reads them (generic-proxy
    // writes, async-proxy reads).
    CpAsyncArriveNoinc(sm.q_full);
    constexpr int kRowsPerPass = Cfg::kProducerThreads / Cfg::kChunksPerRow;
    const int chunk = tid % Cfg::kChunksPerRow;
    const int row0 = tid / Cfg::kChunksPerRow;
    // Copies this thread's 16-byte pieces of tile `it` of `src` into shared memory at `dst`
    // (its first row), one row every `step` elements: the thread's rows are kRowsPerPass apart,
    // a multiple of the 8-row swizzle period, so the swizzle phase is the same for all of them.
    auto gather_kv = [&](const Element* src, const int (&kt)[3], Element* dst, int step) {
      int limit[3];
      bool interior;
      const Element* tile =
          src + kv_base + w.KvTileStart(kt, p, limit, interior) * kv_stride + chunk * Cfg::kChunk;
#pragma unroll 4
      for (int i = 0; i < kBKV / kRowsPerPass; ++i) {
        const int2 row = kv_rows[row0 + i * kRowsPerPass];
        const int coords = row.y;
        const bool valid =
            interior | (((coords & 0xff) < limit[0]) & (((coords >> 8) & 0xff) < limit[1]) &
                        ((coords >> 16) < limit[2]));
        CpAsync16(dst + i * step, valid ? tile + int64_t(row.x) * kv_stride : src, valid);
      }
    };
    const int col = chunk * Cfg::kChunk;
    const int k_step = static_cast<int>(&sK(row0 + kRowsPerPass, col, 0) - &sK(row0, col, 0));
    const int v_step = static_cast<int>(&sV(col, row0 + kRowsPerPass, 0) - &sV(col, row0, 0));
    KvTileCursor tile(w);
    RingPos<kS> ring;
    for (int it = 0; it < w.num_kv; ++it, tile.Advance(), ring.Advance()) {
      const int s = ring.stage;
      const uint32_t parity = ring.phase ^ 1;
      MbarWait(sm.k_empty + s, parity);
      gather_kv(k, tile.kt, &sK(row0, col, s), k_step);
      CpAsyncArriveNoinc(sm.k_full + s);
      MbarWait(sm.v_empty + s, parity);
      gather_kv(v, tile.kt, &sV(col, row0, s), v_step);
      CpAsyncArriveNoinc(sm.v_full + s);
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");  // nothing in flight at exit
  } else {
    // ---------------------------------------------------------------- consumer warpgroups
    RegAlloc<Cfg::kConsumerRegs>();
    TileSeq<Cfg::kStages> seq{};
    seq.first = true;
    ConsumeTile<Cfg>(p, w, sQ, sK, sV, sm, seq, nullptr);  // LoadWork: no next work item
  }
}

}  // namespace jaxk::gna
