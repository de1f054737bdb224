// Consumer warpgroups of the warp-specialised GNA forward kernels (sm_90a): two warpgroups of 64
// query rows each run S = Q K^T and O += P V on wgmma (P from registers) with the online softmax
// in registers, and take turns issuing their GEMMs through named barriers ("ping-pong"), so that
// one warpgroup's softmax overlaps the other's tensor-core work; within a warpgroup,
// Q K(i)^T and P(i-1) V(i-1) are issued together as two groups, and the exponentials of S(i)
// run while P(i-1) V(i-1) is still in flight. They wait on the full barriers of the Q tile
// and the K/V ring and hand stages back through the empty barriers; what fills them is the
// producer's business.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cute/arch/copy_sm90.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cute/tensor.hpp>

#include "gna/fwd_device.cuh"
#include "gna/fwd_params.h"
#include "gna/fwd_softmax.cuh"
#include "gna/fwd_sync.cuh"
#include "gna/fwd_tma.cuh"
#include "gna/fwd_work.cuh"
#include "gna/fwd_ws_config.cuh"

// Diagnostic build (-DJAXK_GNA_TIMING=1): per-consumer cycle counts of the persistent TMA kernel,
// printed at exit for the first CTAs.
#ifndef JAXK_GNA_TIMING
#define JAXK_GNA_TIMING 0
#endif

namespace jaxk::gna {

// Where a consumer's work item sits in the CTA's sequence: the ring position of its first KV
// tile (advanced past its last on return), the parity of its Q phase, and whether it is the
// CTA's first (the turn-taking hand-over).
template <int kStages>
struct TileSeq {
  RingPos<kStages> ring;
  uint32_t q_phase;
  bool first;
  int stored_stage = -1;  // TMA kernel: the K stage the last O bulk store reads (-1: none)
#if JAXK_GNA_TIMING
  long long t_q = 0, t_loop = 0, t_epi = 0, t_kv = 0, t_turn = 0, t_gemm = 0, t_soft = 0;
  long long items = 0, tiles = 0;
#endif
};
#if JAXK_GNA_TIMING
#define JAXK_TIMED(acc, stmt)        \
  do {                               \
    const long long t0_ = clock64(); \
    stmt;                            \
    seq.acc += clock64() - t0_;      \
  } while (0)
#else
#define JAXK_TIMED(acc, stmt) stmt
#endif

// One work item of the two consumer warpgroups: waits for its Q tile, walks its KV tiles through
// the ring, and hands the Q buffer back after its last Q K^T (q_empty: the producer may load
// the next work item's Q while this one finishes). O is staged for coalesced stores in the
// last K stage, which is handed back after the stores (TMA kernel: bulk tensor stores through
// `maps->o`; unused otherwise). Returns whether another work item follows.
template <class Cfg, class TQ, class TK, class TV>
__device__ __forceinline__ bool ConsumeTile(const FwdParams& p, const WorkTile& w, TQ& sQ, TK& sK,
                                            TV& sV, const WsSmem<Cfg>& sm,
                                            TileSeq<Cfg::kStages>& seq, const FwdTmaMaps* maps) {
  using namespace cute;
  using Element = typename Cfg::Element;
  constexpr int kD = Cfg::kHeadDim;
  constexpr int kBQ = Cfg::kBlockQ;
  constexpr int kBKV = Cfg::kBlockKV;
  const int tid = threadIdx.x;
  const int ctid = tid - Cfg::kProducerThreads;  // 0..255
  const int consumer = ctid / 128;               // owns Q rows [64 * consumer, +64)
  const int other = consumer ^ 1;

  typename Cfg::TiledMmaQK mma_qk;
  typename Cfg::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(ctid);
  auto thr_pv = mma_pv.get_thread_slice(ctid);
  Tensor tSrQ = thr_qk.make_fragment_A(thr_qk.partition_A(sQ));  // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_qk.make_fragment_B(thr_qk.partition_B(sK));  // (MMA, MMA_N, MMA_K, stage)
  Tensor tOrV = thr_pv.make_fragment_B(thr_pv.partition_B(sV));  // (MMA, MMA_N, MMA_K, stage)
  Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kBQ>, Int<kD>>{});
  Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBQ>, Int<kBKV>>{});
  Tensor acc_o_rc = make_tensor(acc_o.data(), RowColView(acc_o.layout()));
  Tensor s_rc = make_tensor(acc_s.data(), RowColView(acc_s.layout()));
  Tensor p_regs = make_tensor_like<Element>(acc_s);
  Tensor tOrP = make_tensor(p_regs.data(), AccumulatorAsA(p_regs.layout()));
  clear(acc_o);

  // Consumer 0 issues first; consumer 1 hands it the first turn (later work items: the hand-over
  // at the end of the previous one).
  if (seq.first && consumer == 1) NamedArrive(kBarSchedule + 0, Cfg::kConsumerThreads);
  // The producer wrote the work item before arriving on q_full.
#if JAXK_GNA_TIMING
  const long long t_enter = clock64();
#endif
  MbarWait(sm.q_full, seq.q_phase);
#if JAXK_GNA_TIMING
  const long long t_qdone = clock64();
  seq.t_q += t_qdone - t_enter;
  seq.items += 1;
  seq.tiles += w.num_kv;
#endif
  const bool has_next = w.has_next;

  Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBQ>, Int<kBKV>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), RowColView(tScS.layout()));
  constexpr int kRows = decltype(size<0>(s_rc))::value;
  const RowWindows<kRows> win =
      LoadRowWindows<kRows>(p, w.ax, [&](int m) { return get<0>(tScS_rc(m, 0)); });
  const int q2 = get<1>(tScS_rc(0, 0));  // 2 * (lane % 4): the thread's first column
  uint32_t visible[kRows];

  float row_max[kRows], row_sum[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    row_max[m] = -INFINITY;
    row_sum[m] = 0.f;
  }

  auto issue_qk = [&](int stage) {
    mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
    for (int kb = 0; kb < size<2>(tSrQ); ++kb) {
      cute::gemm(mma_qk, tSrQ(_, _, kb), tSrK(_, _, kb, stage), acc_s);
      mma_qk.accumulate_ = GMMA::ScaleOut::One;
    }
  };
  auto issue_pv = [&](int stage) {
    mma_pv.accumulate_ = GMMA::ScaleOut::One;
#pragma unroll
    for (int kb = 0; kb < size<2>(tOrP); ++kb) {
      cute::gemm(mma_pv, tOrP(_, _, kb), tOrV(_, _, kb, stage), acc_o);
    }
  };
  // The tile's coordinates, mask test and column masks are worked out before its GEMMs are
  // waited for.
  auto column_masks = [&](const int (&kt)[3], bool unmasked) {
    if (!unmasked) ColumnMasks<kRows>(visible, kt, win, p, q2);
  };
  // The softmax in two halves: the exponentials touch S only (in the loop they run while the
  // warpgroup's P V is in flight); P and the (rare) output rescale need that GEMM done. The
  // rescale comes after P, so that its vote and branch do not delay the exponentials.
  auto exponentials = [&](bool unmasked) {
    if (!unmasked) ApplyColumnMasks<kRows>(s_rc, visible);
    return SoftmaxExponentials<kRows>(s_rc, row_max, p.scale_log2);
  };
  auto finish_softmax = [&](const SoftmaxStep<kRows>& step) {
#pragma unroll
    for (int i = 0; i < size(acc_s); ++i) p_regs(i) = static_cast<Element>(acc_s(i));
    SoftmaxRescale<kRows>(step, acc_o_rc, row_max, row_sum, p.scale_log2);
  };

  // cp.async writes tiles through the generic proxy, which wgmma (async proxy) reads only after a
  // proxy fence; TMA writes through the async proxy already.
  auto fence_loads = [] {
    if constexpr (!Cfg::kTma) FenceToAsyncProxy();
  };

  // The warp's wgmma reads of a stage (or of Q) are complete: one lane hands it back.
  auto release = [&](uint64_t* empty) {
    __syncwarp();
    if (ctid % 32 == 0) MbarArrive(empty);
  };

  // Block 0: S(0) = Q K(0)^T.
  KvTileCursor tile(w);
  // The unmasked box in registers: the test runs every tile (WorkTile lives in shared memory).
  const int full_lo[3] = {w.ax[0].full_lo, w.ax[1].full_lo, w.ax[2].full_lo};
  const int full_hi[3] = {w.ax[0].full_hi, w.ax[1].full_hi, w.ax[2].full_hi};
  const int num_kv = w.num_kv;
  bool unmasked = tile.Unmasked(full_lo, full_hi);
  RingPos<Cfg::kStages> k_pos = seq.ring;  // K of the current KV tile
  JAXK_TIMED(t_kv, MbarWait(sm.k_full + k_pos.stage, k_pos.phase));
  fence_loads();
  JAXK_TIMED(t_turn, NamedSync(kBarSchedule + consumer, Cfg::kConsumerThreads));
  warpgroup_fence_operand(acc_s);
  warpgroup_arrive();
  issue_qk(k_pos.stage);
  warpgroup_commit_batch();
  NamedArrive(kBarSchedule + other, Cfg::kConsumerThreads);
  column_masks(tile.kt, unmasked);
  if (seq.stored_stage >= 0) {
    // The previous work item's O store has had this item's first Q K^T to read its stage.
    if (ctid % 128 == 0) {
      BulkWaitRead();
      MbarArriveCount(sm.k_empty + seq.stored_stage, 4);
    }
    seq.stored_stage = -1;
    __syncwarp();
  }
  warpgroup_wait<0>();
  warpgroup_fence_operand(acc_s);
  // The last K stage stages O (below).
  if (num_kv > 1) release(sm.k_empty + k_pos.stage);
  finish_softmax(exponentials(unmasked));

  // Block it: O += P(it-1) V(it-1) and S(it) = Q K(it)^T, then the softmax of S(it).
  RingPos<Cfg::kStages> v_pos = k_pos;  // V of the previous KV tile
  for (int it = 1; it < num_kv; ++it) {
    k_pos.Advance();
    tile.Advance();
    unmasked = tile.Unmasked(full_lo, full_hi);
    JAXK_TIMED(t_kv, MbarWait(sm.v_full + v_pos.stage, v_pos.phase));
    JAXK_TIMED(t_kv, MbarWait(sm.k_full + k_pos.stage, k_pos.phase));
    fence_loads();
    JAXK_TIMED(t_turn, NamedSync(kBarSchedule + consumer, Cfg::kConsumerThreads));
    warpgroup_fence_operand(acc_s);
    warpgroup_fence_operand(acc_o);
    warpgroup_arrive();
    // Q K(it)^T first, in its own group: its softmax runs while P(it-1) V(it-1) is still on the
    // tensor cores (FlashAttention-3's intra-warpgroup overlap).
    issue_qk(k_pos.stage);
    warpgroup_commit_batch();
    issue_pv(v_pos.stage);
    warpgroup_commit_batch();
    NamedArrive(kBarSchedule + other, Cfg::kConsumerThreads);
    column_masks(tile.kt, unmasked);
    JAXK_TIMED(t_gemm, warpgroup_wait<1>());
    warpgroup_fence_operand(acc_s);
    if (it + 1 < num_kv) release(sm.k_empty + k_pos.stage);
    const SoftmaxStep<kRows> step = exponentials(unmasked);
    warpgroup_fence_operand(acc_s);
    // ptxas schedules within a basic block and hoists the wait for P V to the first row maximum
    // (no register ties them). A branch that depends on the exponentials ends the block, so
    // the wait stays after them. Never taken (no sum of exponentials has this bit pattern);
    // the sleep is harmless if it were. (A __trap() there made ptxas serialise every wgmma.)
    if (__float_as_uint(step.sum[0]) == 0xffffffffu) asm volatile("nanosleep.u32 1;");
    JAXK_TIMED(t_gemm, warpgroup_wait<0>());
    warpgroup_fence_operand(acc_o);
    release(sm.v_empty + v_pos.stage);
    JAXK_TIMED(t_soft, finish_softmax(step));
    v_pos = k_pos;
  }
  // Every Q K^T of this work item has completed: the producer may load the next Q, and
  // consumer 0 may stage O in the last K stage, which consumer 1's last Q K^T reads (consumer 1
  // stages only after consumer 0's last P V, issued after consumer 0's last Q K^T completed).
  release(sm.q_empty);
  if (consumer == 1) NamedArrive(kBarQkDone, Cfg::kConsumerThreads);

  // Last block: O += P V of the last tile. Consumer 1 hands the turn over only if another work
  // item follows (else nobody waits).
  {
    JAXK_TIMED(t_kv, MbarWait(sm.v_full + v_pos.stage, v_pos.phase));
    fence_loads();
    JAXK_TIMED(t_turn, NamedSync(kBarSchedule + consumer, Cfg::kConsumerThreads));
    warpgroup_fence_operand(acc_o);
    warpgroup_arrive();
    issue_pv(v_pos.stage);
    warpgroup_commit_batch();
    if (consumer == 0 || has_next) NamedArrive(kBarSchedule + other, Cfg::kConsumerThreads);
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_o);
    release(sm.v_empty + v_pos.stage);
  }
  seq.ring = v_pos;
  seq.ring.Advance();
#if JAXK_GNA_TIMING
  const long long t_loop_end = clock64();
  seq.t_loop += t_loop_end - t_qdone;
#endif

  // Epilogue: normalise, write the log-sum-exp (natural log), stage O through this consumer's
  // own rows of the last K stage (its Q K^T is done; the producer waits for it), then 16-byte
  // stores, and hand the stage back.
  static_assert(kBQ == kBKV, "O is staged in a K stage");
  Tensor sO = make_tensor(make_smem_ptr(&sK(0, 0, k_pos.stage)), typename Cfg::SmemLayoutQ{});
  const int64_t tokens = int64_t(p.n[0]) * p.n[1] * p.n[2];
  Tensor tOcO = thr_pv.partition_C(make_identity_tensor(Shape<Int<kBQ>, Int<kD>>{}));
  Tensor tOcO_rc = make_tensor(tOcO.data(), RowColView(tOcO.layout()));
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    const float lse = FinishRow(acc_o_rc, m, row_max[m], row_sum[m], p.scale_log2);
    int64_t token;
    if (ctid % 4 == 0 && w.QToken(get<0>(tOcO_rc(m, 0)), p, token)) {
      p.lse[(w.batch * tokens + token) * p.heads_q + w.head] = lse;
    }
  }
  Tensor o_regs = make_tensor_like<Element>(acc_o);
#pragma unroll
  for (int i = 0; i < size(acc_o); ++i) o_regs(i) = static_cast<Element>(acc_o(i));
  // stmatrix: four 8x8 matrices per instruction (the element-wise copy took 32 generic stores).
  if (consumer == 0) NamedSync(kBarQkDone, Cfg::kConsumerThreads);
  auto stsm = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma_pv);
  auto thr_stsm = stsm.get_thread_slice(ctid);
  cute::copy(stsm, thr_stsm.retile_S(o_regs), thr_stsm.partition_D(sO));
  if constexpr (Cfg::kTma) {
    // The TMA kernel stores this consumer's 64 rows with bulk tensor copies (out-of-grid rows
    // are not written) once every thread's writes are visible to the async proxy. The issuing
    // thread hands the stage back for its warpgroup once the copies have read it: during the
    // next work item's first Q K^T (waiting here made the epilogue 3.1k instead of 2.5k cycles),
    // or here after the CTA's last work item.
    FenceToAsyncProxy();
    NamedSync(kBarEpilogue + consumer, 128);
    if (ctid % 128 == 0) {
      constexpr int kBox = Cfg::kAtomCols;
      const int half = HalfTileAxis(p.q_shift);
      const int step = consumer << (p.q_shift[half] - 1);
      const int c0 = w.ax[0].q_start + (half == 0 ? step : 0);
      const int c1 = w.ax[1].q_start + (half == 1 ? step : 0);
      const int c2 = w.ax[2].q_start + (half == 2 ? step : 0);
#pragma unroll
      for (int kb = 0; kb < kD / kBox; ++kb) {
        TmaStore5d(&maps->o, &sO(64 * consumer, kb * kBox), w.head * kD + kb * kBox, c2, c1, c0,
                   static_cast<int>(w.batch));
      }
      BulkCommit();
      if (!has_next) {
        BulkWaitRead();
        MbarArriveCount(sm.k_empty + k_pos.stage, 4);
      }
    }
    if (has_next) seq.stored_stage = k_pos.stage;
    __syncwarp();
#if JAXK_GNA_TIMING
    seq.t_epi += clock64() - t_loop_end;
#endif
    return has_next;
  }
  NamedSync(kBarEpilogue + consumer, 128);
  const int64_t q_stride = int64_t(p.heads_q) * kD;
  auto* o = static_cast<Element*>(p.o) + (w.batch * tokens * p.heads_q + w.head) * kD;
  const int local = ctid % 128;
  const int chunk = local % Cfg::kChunksPerRow;
  constexpr int kRowsPerPass = 128 / Cfg::kChunksPerRow;
#pragma unroll
  for (int i = 0; i < 64 / kRowsPerPass; ++i) {
    const int r = 64 * consumer + local / Cfg::kChunksPerRow + i * kRowsPerPass;
    int64_t token;
    if (w.QToken(r, p, token)) {
      *reinterpret_cast<uint4*>(o + token * q_stride + chunk * Cfg::kChunk) =
          *reinterpret_cast<const uint4*>(&sO(r, chunk * Cfg::kChunk));
    }
  }
  // Generic-proxy reads of the stage come before the producer's bulk copies overwrite it.
  FenceToAsyncProxy();
  release(sm.k_empty + k_pos.stage);
#if JAXK_GNA_TIMING
  seq.t_epi += clock64() - t_loop_end;
#endif
  return has_next;
}

}  // namespace jaxk::gna
