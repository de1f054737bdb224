// Warp-specialised GNA forward kernel for sm_90a with a TMA producer.
//
// Same work split and consumers (fwd_consumer.cuh) as fwd_kernel_ws.cuh; the producer is one
// thread issuing one 5-D bulk tensor copy per tile and 64-column k-block (head_dim 32: one per
// tile), completing on the stage's full barrier through its transaction count. The tensor maps
// (fwd_tma_host.cc) view q, k and v as (heads * head_dim, n2, n1, n0, batch) with the box
// (k-block, 2^shift[2], 2^shift[1], 2^shift[0], 1): the engine writes the box's token rows in
// SplitRow order (axis 2 fastest) as 128-byte (head_dim 32: 64-byte) rows with the swizzle of
// the wgmma layouts (fwd_layouts.cuh) and zero-fills tokens past the grid, which the mask
// hides as in the cp.async kernel. Dilation 1 only (the host picks the cp.async kernel
// otherwise), so tile coordinates are grid coordinates.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cute/tensor.hpp>

#include "gna/fwd_consumer.cuh"
#include "gna/fwd_params.h"
#include "gna/fwd_sync.cuh"
#include "gna/fwd_tma.cuh"
#include "gna/fwd_work.cuh"
#include "gna/fwd_ws_config.cuh"

// Diagnostic build (-DJAXK_GNA_DIAG_SKIP_KV=1, wrong results): a work item's KV tiles after its
// first kStages are not loaded (the consumers reuse stale stages), to measure how much of the
// loop's time the K/V loads cost (tools/gna_item_cost.py on such a build).
#ifndef JAXK_GNA_DIAG_SKIP_KV
#define JAXK_GNA_DIAG_SKIP_KV 0
#endif

namespace jaxk::gna {

// The Q tile of a work item, on q_full (whose arrival also publishes the work item).
template <class Cfg>
__device__ __forceinline__ void ProduceQ(const WorkTile& w, const FwdTmaMaps& maps,
                                         const WsSmem<Cfg>& sm) {
  using namespace cute;
  using Element = typename Cfg::Element;
  constexpr int kD = Cfg::kHeadDim;
  constexpr int kBox = Cfg::kAtomCols;
  constexpr uint32_t kQBytes = Cfg::kBlockQ * kD * sizeof(Element);
  static_assert(Cfg::kSmemQ * sizeof(Element) == kQBytes);
  Tensor sQ = make_tensor(make_smem_ptr(sm.q), typename Cfg::SmemLayoutQ{});  // (q, d)
  MbarArriveExpectTx(sm.q_full, kQBytes);
#pragma unroll
  for (int kb = 0; kb < kD / kBox; ++kb) {
    TmaLoad5d(&maps.q, sm.q_full, &sQ(0, kb * kBox), w.head * kD + kb * kBox, w.ax[2].q_start,
              w.ax[1].q_start, w.ax[0].q_start, static_cast<int>(w.batch));
  }
}

// KV tiles of one work item; `ring` is the position of its first KV tile and
// advances past its last.
template <class Cfg>
__device__ __forceinline__ void ProduceTileKv(const FwdParams& p, const WorkTile& w,
                                              const FwdTmaMaps& maps, const WsSmem<Cfg>& sm,
                                              RingPos<Cfg::kStages>& ring) {
  using namespace cute;
  using Element = typename Cfg::Element;
  constexpr int kD = Cfg::kHeadDim;
  constexpr int kS = Cfg::kStages;
  constexpr int kBox = Cfg::kAtomCols;
  constexpr uint32_t kKvBytes = Cfg::kBlockKV * kD * sizeof(Element);
  static_assert(Cfg::kSmemK == kS * Cfg::kBlockKV * kD);
  Tensor sK = make_tensor(make_smem_ptr(sm.k), typename Cfg::SmemLayoutK{});  // (kv, d, stage)
  Tensor sV = make_tensor(make_smem_ptr(sm.v), typename Cfg::SmemLayoutV{});  // (d, kv, stage)
  const int batch = static_cast<int>(w.batch);

  KvTileCursor tile(w);
  for (int it = 0; it < w.num_kv; ++it, tile.Advance(), ring.Advance()) {
    const int s = ring.stage;
    const uint32_t parity = ring.phase ^ 1;
    const int x0 = tile.kt[0] << p.kv_shift[0];
    const int x1 = tile.kt[1] << p.kv_shift[1];
    const int x2 = tile.kt[2] << p.kv_shift[2];
    const int col = w.head_kv * kD;
    MbarWait(sm.k_empty + s, parity);
    if (JAXK_GNA_DIAG_SKIP_KV && it >= kS) {
      MbarArrive(sm.k_full + s);
      MbarWait(sm.v_empty + s, parity);
      MbarArrive(sm.v_full + s);
      continue;
    }
    MbarArriveExpectTx(sm.k_full + s, kKvBytes);
#pragma unroll
    for (int kb = 0; kb < kD / kBox; ++kb) {
      TmaLoad5d(&maps.k, sm.k_full + s, &sK(0, kb * kBox, s), col + kb * kBox, x2, x1, x0, batch);
    }
    MbarWait(sm.v_empty + s, parity);
    MbarArriveExpectTx(sm.v_full + s, kKvBytes);
#pragma unroll
    for (int kb = 0; kb < kD / kBox; ++kb) {
      TmaLoad5d(&maps.v, sm.v_full + s, &sV(kb * kBox, 0, s), col + kb * kBox, x2, x1, x0, batch);
    }
  }
}

// The work item after `work`: the next one from the shared counter (persistent launch: CTAs take
// work items in order as they free up, like the hardware's block scheduler), or none (one CTA
// per work item).
__device__ __forceinline__ int NextWork(const FwdParams& p, int work) {
  if (p.work_counter == nullptr) return work + static_cast<int>(gridDim.x);
  return static_cast<int>(gridDim.x) + atomicAdd(p.work_counter, 1);
}

// Persistent when launched with fewer CTAs than work items: CTA b starts with work item b and
// takes the next free one after each. The producer loads a work item's Q as soon as the
// consumers' last Q K^T of the previous one is done, and its KV tiles as ring stages free up, so
// a work item's loads overlap the end of the previous one.
template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    GnaFwdTmaKernel(const __grid_constant__ FwdParams p, const __grid_constant__ FwdTmaMaps maps) {
  using namespace cute;
  static_assert(Cfg::kTma);
  extern __shared__ char smem_raw[];
  const WsSmem<Cfg> sm(smem_raw);
  const int tid = threadIdx.x;
  if (tid == 0) {
    // Full barriers: the producer's one arrival (with the expected bytes) per phase.
    sm.InitBarriers(1);
  } else if (tid == 32) {
    PrefetchTensorMap(&maps.q);
    PrefetchTensorMap(&maps.k);
    PrefetchTensorMap(&maps.v);
  }
  __syncthreads();

  if (tid < Cfg::kProducerThreads) {
    // ---------------------------------------------------------------- producer warpgroup
    RegDealloc<Cfg::kProducerRegs>();
    if (tid != 0) return;
    const int num_work = static_cast<int>(p.q_tiles * p.heads_q * p.batch);
    RingPos<Cfg::kStages> ring;
    int work = blockIdx.x;
    LoadWork(p, work, sm.Work(0));
    for (int t = 0;; ++t) {
      const int next = NextWork(p, work);
      // The Q buffer is free once the previous work item's last Q K^T is done; by then the
      // consumers have stored work item t - 2, whose slot work item t + 1 takes.
      MbarWait(sm.q_empty, (t & 1) ^ 1);
      WorkTile& w = sm.Work(t);
      w.has_next = next < num_work;
      ProduceQ<Cfg>(w, maps, sm);  // publishes w
      if (next < num_work) LoadWork(p, next, sm.Work(t + 1));
      ProduceTileKv<Cfg>(p, w, maps, sm, ring);
      if (next >= num_work) break;
      work = next;
    }
  } else {
    // ---------------------------------------------------------------- consumer warpgroups
    RegAlloc<Cfg::kConsumerRegs>();
    Tensor sQ = make_tensor(make_smem_ptr(sm.q), typename Cfg::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(sm.k), typename Cfg::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(sm.v), typename Cfg::SmemLayoutV{});
    TileSeq<Cfg::kStages> seq{};
    seq.first = true;
#if JAXK_GNA_TIMING
    const long long t_start = clock64();
#endif
    for (int t = 0;; ++t) {
      seq.q_phase = t & 1;
      if (!ConsumeTile<Cfg>(p, sm.Work(t), sQ, sK, sV, sm, seq, &maps)) break;
      seq.first = false;
    }
#if JAXK_GNA_TIMING
    if ((tid - Cfg::kProducerThreads) % 128 == 0 && blockIdx.x < 24) {
      printf(
          "TIMING cta %d wg %d items %lld tiles %lld total %lld q %lld loop %lld epi %lld kv %lld "
          "turn %lld gemm %lld soft %lld\n",
          blockIdx.x, (tid - Cfg::kProducerThreads) / 128, seq.items, seq.tiles,
          clock64() - t_start, seq.t_q, seq.t_loop, seq.t_epi, seq.t_kv, seq.t_turn, seq.t_gemm,
          seq.t_soft);
    }
#endif
  }
}

}  // namespace jaxk::gna
