// Warp-specialised GNA forward kernel for sm_90a.
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
// stages. Warpgroups 1 and 2 are consumers of 64 query rows
// each: S = Q K^T and O += P V on wgmma (P from registers), online softmax in registers. The two
// consumers take turns issuing their GEMMs (named barriers, "ping-pong"), so that one
// warpgroup's softmax overlaps the other's tensor-core work; within a warpgroup, P(i-1) V(i-1)
// and Q K(i)^T are issued together.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>
#include <type_traits>

#include "gna/fwd_device.cuh"
#include "gna/fwd_params.h"
#include "gna/fwd_softmax.cuh"
#include "gna/fwd_sync.cuh"

namespace jaxk::gna {

template <class Element_, int kHeadDim_>
struct WsConfig {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockQ = 128;   // two consumers of 64 rows
  static constexpr int kBlockKV = 128;  // = jax_gna.tiling.kv_block
  static_assert(kHeadDim <= 128, "head_dim 256 runs on the non-specialised kernel");
  static constexpr int kStages = 3;
  static constexpr int kProducerThreads = 128;
  static constexpr int kConsumerThreads = 256;
  static constexpr int kThreads = kProducerThreads + kConsumerThreads;
  // head_dim 32: the producer issues more, smaller rows; the consumers hold little.
  static constexpr int kProducerRegs = kHeadDim == 32 ? 96 : 56;
  static constexpr int kConsumerRegs = kHeadDim == 32 ? 200 : 224;
  // setmaxnreg.inc blocks until the pool has the registers: the CTA starts with 168 per thread
  // (launch bounds), so the split must not exceed 168 * 384 in total.
  static_assert(kProducerRegs * kProducerThreads + kConsumerRegs * kConsumerThreads <=
                168 * kThreads);
  static constexpr int kChunk = 8;  // elements per 16-byte copy
  static constexpr int kChunksPerRow = kHeadDim / kChunk;

  static constexpr bool kSw128 = kHeadDim % 64 == 0;
  using AtomK = std::conditional_t<kSw128, cute::GMMA::Layout_K_SW128_Atom<Element>,
                                   cute::GMMA::Layout_K_SW64_Atom<Element>>;
  using AtomMN = std::conditional_t<kSw128, cute::GMMA::Layout_MN_SW128_Atom<Element>,
                                    cute::GMMA::Layout_MN_SW64_Atom<Element>>;
  using SmemLayoutQ = decltype(cute::tile_to_shape(
      AtomK{}, cute::Shape<cute::Int<kBlockQ>, cute::Int<kHeadDim>>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(
      AtomK{}, cute::Shape<cute::Int<kBlockKV>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));
  // V is read as the MN-major B operand of O += P V: (head_dim, kv) with head_dim contiguous.
  using SmemLayoutV = decltype(cute::tile_to_shape(
      AtomMN{}, cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockKV>, cute::Int<kStages>>{},
      cute::Step<cute::_2, cute::_1, cute::_3>{}));

  using WarpGroups = cute::Layout<cute::Shape<cute::_2, cute::_1, cute::_1>>;
  using TiledMmaQK = decltype(cute::make_tiled_mma(
      cute::SM90::GMMA::ss_op_selector<
          Element, Element, float,
          cute::Shape<cute::_64, cute::Int<kBlockKV>, cute::Int<kHeadDim>>>(),
      WarpGroups{}));
  using TiledMmaPV = decltype(cute::make_tiled_mma(
      cute::SM90::GMMA::rs_op_selector<
          Element, Element, float, cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockKV>>,
          cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      WarpGroups{}));

  static constexpr int kSmemQ = cute::cosize_v<SmemLayoutQ>;
  static constexpr int kSmemK = cute::cosize_v<SmemLayoutK>;
  static constexpr int kSmemV = cute::cosize_v<SmemLayoutV>;
  static constexpr int kTileBytes = (kSmemQ + kSmemK + kSmemV) * sizeof(Element);
  // Barriers: q_full, k_full[S], v_full[S], k_empty[S], v_empty[S].
  static constexpr int kNumBarriers = 1 + 4 * kStages;
  static_assert(8 * kNumBarriers <= 128);
  static constexpr int kWorkOffset = kTileBytes + 128;
  // Per KV-tile row: token offset from the tile's first row and packed in-tile coordinates.
  static constexpr int kRowTableOffset = kWorkOffset + 128;
  static_assert(kTileBytes % 1024 == 0 && kRowTableOffset % 8 == 0);
  // +1024: the swizzled layouts need a 1024-byte aligned base.
  static constexpr int kSmemBytes = kRowTableOffset + 8 * kBlockKV + 1024;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");
  // Full barriers count producer threads (each arrives when its own copies land); empty
  // barriers count consumer warps (one elected lane arrives for its warp).
  static constexpr int kConsumerWarps = kConsumerThreads / 32;
};

// Named barrier ids (0 is __syncthreads).
constexpr int kBarSchedule = 1;  // + consumer index: whose turn it is to issue GEMMs
constexpr int kBarEpilogue = 3;  // + consumer index: O staged in shared memory

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

// Everything a CTA knows about its work item.
struct WorkTile {
  AxisTile ax[3];
  int64_t batch;
  int head;
  int head_kv;
  int kv_count[3];
  int num_kv;

  __device__ __forceinline__ void KvTile(int it, int (&kt)[3]) const {
    kt[2] = ax[2].kv_lo + it % kv_count[2];
    it /= kv_count[2];
    kt[1] = ax[1].kv_lo + it % kv_count[1];
    kt[0] = ax[0].kv_lo + it / kv_count[1];
  }

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

  __device__ __forceinline__ bool Unmasked(const int (&kt)[3]) const {
    bool full = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) full = full && kt[a] >= ax[a].full_lo && kt[a] < ax[a].full_hi;
    return full;
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

__device__ __forceinline__ void LoadWork(const FwdParams& p, WorkTile& w) {
  int64_t work = blockIdx.x;
  int64_t tile = work % p.q_tiles;  // Q tile fastest: CTAs running together share KV in L2
  work /= p.q_tiles;
  w.head = static_cast<int>(work % p.heads_q);
  w.batch = work / p.heads_q;
  w.head_kv = w.head / (p.heads_q / p.heads_kv);
#pragma unroll
  for (int a = 2; a >= 0; --a) {
    const int idx = static_cast<int>(tile % p.num_tiles[a]);
    tile /= p.num_tiles[a];
    w.ax[a] = LoadAxisTile(p.tables + p.axis_off[a] + 8 * idx);
  }
  w.num_kv = 1;
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    w.kv_count[a] = w.ax[a].kv_hi - w.ax[a].kv_lo;
    w.num_kv *= w.kv_count[a];
  }
}

template <class Cfg, class TQ, class TK, class TV>
__device__ __forceinline__ void Consume(const FwdParams& p, const WorkTile& w, TQ& sQ, TK& sK,
                                        TV& sV, uint64_t* q_full, uint64_t* k_full,
                                        uint64_t* v_full, uint64_t* k_empty, uint64_t* v_empty) {
  using namespace cute;
  using Element = typename Cfg::Element;
  constexpr int kD = Cfg::kHeadDim;
  constexpr int kBQ = Cfg::kBlockQ;
  constexpr int kBKV = Cfg::kBlockKV;
  constexpr int kS = Cfg::kStages;
  const int tid = threadIdx.x;
  const int64_t tokens = int64_t(p.n[0]) * p.n[1] * p.n[2];
  const int64_t q_base = (w.batch * tokens * p.heads_q + w.head) * kD;
  const int64_t q_stride = int64_t(p.heads_q) * kD;
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

  Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kBQ>, Int<kBKV>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), RowColView(tScS.layout()));
  constexpr int kRows = decltype(size<0>(s_rc))::value;
  const RowWindows<kRows> win =
      LoadRowWindows<kRows>(p, w.ax, [&](int m) { return get<0>(tScS_rc(m, 0)); });
  auto col_of = [&](int n) { return get<1>(tScS_rc(0, n)); };

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
  auto softmax = [&](int it) {
    int kt[3];
    w.KvTile(it, kt);
    if (!w.Unmasked(kt)) MaskScores<kRows>(s_rc, kt, win, p, col_of);
    OnlineSoftmax<kRows>(s_rc, acc_o_rc, row_max, row_sum, p.scale_log2);
#pragma unroll
    for (int i = 0; i < size(acc_s); ++i) p_regs(i) = static_cast<Element>(acc_s(i));
  };

  // The warp's wgmma reads of a stage are complete: one lane hands it back.
  auto release = [&](uint64_t* empty) {
    __syncwarp();
    if (ctid % 32 == 0) MbarArrive(empty);
  };

  // Consumer 0 issues first; consumer 1 hands it the first turn.
  if (consumer == 1) NamedArrive(kBarSchedule + 0, Cfg::kConsumerThreads);
  MbarWait(q_full, 0);

  // Block 0: S(0) = Q K(0)^T.
  MbarWait(k_full, 0);
  FenceToAsyncProxy();
  NamedSync(kBarSchedule + consumer, Cfg::kConsumerThreads);
  warpgroup_fence_operand(acc_s);
  warpgroup_arrive();
  issue_qk(0);
  warpgroup_commit_batch();
  NamedArrive(kBarSchedule + other, Cfg::kConsumerThreads);
  warpgroup_wait<0>();
  warpgroup_fence_operand(acc_s);
  release(k_empty);
  softmax(0);

  // Block it: O += P(it-1) V(it-1) and S(it) = Q K(it)^T, then the softmax of S(it).
  for (int it = 1; it < w.num_kv; ++it) {
    const int s = it % kS;
    const int sp = (it - 1) % kS;
    MbarWait(v_full + sp, ((it - 1) / kS) & 1);
    MbarWait(k_full + s, (it / kS) & 1);
    FenceToAsyncProxy();
    NamedSync(kBarSchedule + consumer, Cfg::kConsumerThreads);
    warpgroup_fence_operand(acc_s);
    warpgroup_fence_operand(acc_o);
    warpgroup_arrive();
    issue_pv(sp);
    issue_qk(s);
    warpgroup_commit_batch();
    NamedArrive(kBarSchedule + other, Cfg::kConsumerThreads);
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_s);
    warpgroup_fence_operand(acc_o);
    release(v_empty + sp);
    release(k_empty + s);
    softmax(it);
  }

  // Last block: O += P V of the last tile. Consumer 1 skips its hand-over (nobody waits).
  {
    const int sp = (w.num_kv - 1) % kS;
    MbarWait(v_full + sp, ((w.num_kv - 1) / kS) & 1);
    FenceToAsyncProxy();
    NamedSync(kBarSchedule + consumer, Cfg::kConsumerThreads);
    warpgroup_fence_operand(acc_o);
    warpgroup_arrive();
    issue_pv(sp);
    warpgroup_commit_batch();
    if (consumer == 0) NamedArrive(kBarSchedule + other, Cfg::kConsumerThreads);
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_o);
  }

  // Epilogue: normalise, write the log-sum-exp (natural log), stage O through this consumer's
  // own rows of sQ (the other consumer only reads its own rows), then 16-byte stores.
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
  Tensor tOsO = thr_pv.partition_C(sQ);
  Tensor o_regs = make_tensor_like<Element>(acc_o);
#pragma unroll
  for (int i = 0; i < size(acc_o); ++i) o_regs(i) = static_cast<Element>(acc_o(i));
  cute::copy(o_regs, tOsO);
  NamedSync(kBarEpilogue + consumer, 128);
  auto* o = static_cast<Element*>(p.o);
  const int local = ctid % 128;
  const int chunk = local % Cfg::kChunksPerRow;
  constexpr int kRowsPerPass = 128 / Cfg::kChunksPerRow;
#pragma unroll
  for (int i = 0; i < 64 / kRowsPerPass; ++i) {
    const int r = 64 * consumer + local / Cfg::kChunksPerRow + i * kRowsPerPass;
    int64_t token;
    if (w.QToken(r, p, token)) {
      *reinterpret_cast<uint4*>(o + q_base + token * q_stride + chunk * Cfg::kChunk) =
          *reinterpret_cast<const uint4*>(&sQ(r, chunk * Cfg::kChunk));
    }
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
  // Offsetting smem_raw itself (not an integer) keeps the pointers in the shared space.
  char* base = smem_raw + ((1024 - (SmemAddr(smem_raw) & 1023)) & 1023);
  Element* smem_q = reinterpret_cast<Element*>(base);
  Element* smem_k = smem_q + Cfg::kSmemQ;
  Element* smem_v = smem_k + Cfg::kSmemK;
  uint64_t* bars = reinterpret_cast<uint64_t*>(base + Cfg::kTileBytes);
  uint64_t* q_full = bars;
  uint64_t* k_full = bars + 1;
  uint64_t* v_full = k_full + kS;
  uint64_t* k_empty = v_full + kS;
  uint64_t* v_empty = k_empty + kS;
  Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Cfg::SmemLayoutQ{});  // (q, d)
  Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Cfg::SmemLayoutK{});  // (kv, d, stage)
  Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Cfg::SmemLayoutV{});  // (d, kv, stage)

  // The work item lives in shared memory: it is read rarely and registers are scarce.
  WorkTile& w = *reinterpret_cast<WorkTile*>(base + Cfg::kWorkOffset);
  static_assert(sizeof(WorkTile) <= 128);
  int2* kv_rows = reinterpret_cast<int2*>(base + Cfg::kRowTableOffset);
  const int tid = threadIdx.x;
  if (tid == 0) {
    LoadWork(p, w);
    MbarInit(q_full, Cfg::kProducerThreads);
    for (int s = 0; s < kS; ++s) {
      MbarInit(k_full + s, Cfg::kProducerThreads);
      MbarInit(v_full + s, Cfg::kProducerThreads);
      MbarInit(k_empty + s, Cfg::kConsumerWarps);
      MbarInit(v_empty + s, Cfg::kConsumerWarps);
    }
    MbarInitFence();
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
    CpAsyncArriveNoinc(q_full);
    constexpr int kRowsPerPass = Cfg::kProducerThreads / Cfg::kChunksPerRow;
    const int chunk = tid % Cfg::kChunksPerRow;
    const int row0 = tid / Cfg::kChunksPerRow;
    // Copies this thread's 16-byte pieces of tile `it` of `src` into shared memory at `dst`
    // (its first row), one row every `step` elements: the thread's rows are kRowsPerPass apart,
    // a multiple of the 8-row swizzle period, so the swizzle phase is the same for all of them.
    auto gather_kv = [&](const Element* src, int it, Element* dst, int step) {
      int kt[3], limit[3];
      bool interior;
      w.KvTile(it, kt);
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
    for (int it = 0; it < w.num_kv; ++it) {
      const int s = it % kS;
      const uint32_t parity = ((it / kS) & 1) ^ 1;
      MbarWait(k_empty + s, parity);
      gather_kv(k, it, &sK(row0, col, s), k_step);
      CpAsyncArriveNoinc(k_full + s);
      MbarWait(v_empty + s, parity);
      gather_kv(v, it, &sV(col, row0, s), v_step);
      CpAsyncArriveNoinc(v_full + s);
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");  // nothing in flight at exit
  } else {
    // ---------------------------------------------------------------- consumer warpgroups
    RegAlloc<Cfg::kConsumerRegs>();
    Consume<Cfg>(p, w, sQ, sK, sV, q_full, k_full, v_full, k_empty, v_empty);
  }
}

template <class Element, int kHeadDim>
cudaError_t LaunchFwdWsKernel(const FwdParams& params, cudaStream_t stream) {
  using Cfg = WsConfig<Element, kHeadDim>;
  auto* kernel = &GnaFwdWsKernel<Cfg>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int64_t blocks = params.q_tiles * params.heads_q * params.batch;
  if (blocks <= 0) return cudaSuccess;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  kernel<<<static_cast<unsigned>(blocks), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace jaxk::gna
