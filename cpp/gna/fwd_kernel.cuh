// Non-specialised GNA forward kernel for sm_90a, used for head_dim 256 (where the accumulators
// leave no registers for a producer warpgroup; head_dim <= 128 runs fwd_kernel_ws.cuh). Fused
// attention (online softmax, float32 log-sum-exp): each CTA takes one multi-dimensional
// 128-token Q tile and walks only the KV tiles of its neighbourhood box, masking only the tiles
// that the launch table marks as partial.
//
// Tiles are gathered straight from [batch, *spatial, heads, head_dim] with 16-byte cp.async per
// token row (no permutation pass; dilation and GQA are address arithmetic), double-buffered for
// K and V. Both GEMMs run on wgmma: S = Q K^T with Q and K from shared memory, O += P V with P
// from registers. Two warpgroups each own 64 query rows.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cute/tensor.hpp>

#include "gna/fwd_device.cuh"
#include "gna/fwd_layouts.cuh"
#include "gna/fwd_params.h"
#include "gna/fwd_softmax.cuh"
#include "gna/fwd_sync.cuh"
#include "gna/fwd_work.cuh"

namespace jaxk::gna {

// Two warpgroups of 64 query rows; kBlockKV = jax_gna.tiling.kv_block; K and V double-buffered.
template <class Element, int kHeadDim>
using FwdConfigLayouts = FwdLayouts<Element, kHeadDim, 128, (kHeadDim > 128 ? 64 : 128), 2>;

template <class Element_, int kHeadDim_>
struct FwdConfig : FwdConfigLayouts<Element_, kHeadDim_> {
  using Base = FwdConfigLayouts<Element_, kHeadDim_>;
  static constexpr int kThreads = 256;
  static constexpr int kChunk = 8;  // elements per 16-byte copy
  static constexpr int kChunksPerRow = Base::kHeadDim / kChunk;
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  static_assert(Base::kBlockQ % kRowsPerPass == 0 && Base::kBlockKV % kRowsPerPass == 0);
  // +1024: the swizzled layouts need a 1024-byte aligned base.
  static constexpr int kSmemBytes =
      (Base::kSmemQ + Base::kSmemK + Base::kSmemV) * sizeof(Element_) + 1024;
};

// Gathers `kRows` token rows of one tile into shared memory. `row_at(r, offset)` gives the
// element offset of row r and whether it exists (missing rows are zero-filled);
// `smem_at(r, col)` the shared address of element (r, col).
template <class Cfg, int kRows, class RowAt, class SmemAt>
__device__ __forceinline__ void GatherRows(const typename Cfg::Element* gmem, RowAt row_at,
                                           SmemAt smem_at) {
  const int chunk = threadIdx.x % Cfg::kChunksPerRow;
  const int row0 = threadIdx.x / Cfg::kChunksPerRow;
#pragma unroll
  for (int i = 0; i < kRows / Cfg::kRowsPerPass; ++i) {
    const int r = row0 + i * Cfg::kRowsPerPass;
    int64_t offset = 0;
    const bool valid = row_at(r, offset);
    CpAsync16(smem_at(r, chunk * Cfg::kChunk), gmem + (valid ? offset + chunk * Cfg::kChunk : 0),
              valid);
  }
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    GnaFwdKernel(const __grid_constant__ FwdParams p) {
  using namespace cute;
  using Element = typename Cfg::Element;
  constexpr int kD = Cfg::kHeadDim;
  constexpr int kBQ = Cfg::kBlockQ;
  constexpr int kBKV = Cfg::kBlockKV;

  extern __shared__ char smem_raw[];
  Element* smem_q =
      reinterpret_cast<Element*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  Element* smem_k = smem_q + Cfg::kSmemQ;
  Element* smem_v = smem_k + Cfg::kSmemK;
  Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Cfg::SmemLayoutQ{});  // (q, d)
  Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Cfg::SmemLayoutK{});  // (kv, d, stage)
  Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Cfg::SmemLayoutV{});  // (d, kv, stage)

  // Work item (Q tile fastest: CTAs running together share K/V in L2), decoded as the
  // warp-specialised kernels do, held in registers.
  WorkTile w;
  LoadWork(p, static_cast<int>(blockIdx.x), w);
  const int64_t tokens = int64_t(p.n[0]) * p.n[1] * p.n[2];
  const auto* q = static_cast<const Element*>(p.q);
  const auto* k = static_cast<const Element*>(p.k);
  const auto* v = static_cast<const Element*>(p.v);
  // Element offsets of (batch, token 0, head) and the stride between tokens.
  const int64_t q_base = (w.batch * tokens * p.heads_q + w.head) * kD;
  const int64_t kv_base = (w.batch * tokens * p.heads_kv + w.head_kv) * kD;
  const int64_t q_stride = int64_t(p.heads_q) * kD;
  const int64_t kv_stride = int64_t(p.heads_kv) * kD;

  auto q_row = [&](int r, int64_t& offset) {
    int64_t token;
    const bool valid = w.QToken(r, p, token);
    offset = q_base + token * q_stride;
    return valid;
  };
  // K or V of KV tile `kt` into ring stage `stage`.
  auto load_kv = [&](const int (&kt)[3], int stage, bool is_v) {
    auto row_at = [&](int r, int64_t& offset) {
      int c[3], j[3];
      SplitRow(r, p.kv_shift, c);
      for (int a = 0; a < 3; ++a) j[a] = (kt[a] << p.kv_shift[a]) + c[a];
      int64_t token;
      const bool valid = TokenOf(j, w.ax, p, token);
      offset = kv_base + token * kv_stride;
      return valid;
    };
    if (is_v) {
      GatherRows<Cfg, kBKV>(v, row_at, [&](int r, int col) { return &sV(col, r, stage); });
    } else {
      GatherRows<Cfg, kBKV>(k, row_at, [&](int r, int col) { return &sK(r, col, stage); });
    }
  };
  // Two cursors over the KV tiles: the one computed on and the one loaded ahead of it.
  KvTileCursor tile(w);
  KvTileCursor ahead(w);
  const int full_lo[3] = {w.ax[0].full_lo, w.ax[1].full_lo, w.ax[2].full_lo};
  const int full_hi[3] = {w.ax[0].full_hi, w.ax[1].full_hi, w.ax[2].full_hi};

  // Prologue: Q, K0, V0 as three commit groups.
  GatherRows<Cfg, kBQ>(q, q_row, [&](int r, int col) { return &sQ(r, col); });
  CpAsyncCommit();
  load_kv(ahead.kt, 0, false);
  CpAsyncCommit();
  load_kv(ahead.kt, 0, true);
  CpAsyncCommit();
  ahead.Advance();

  const int tid = threadIdx.x;
  typename Cfg::TiledMmaQK mma_qk;
  typename Cfg::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(tid);
  auto thr_pv = mma_pv.get_thread_slice(tid);
  Tensor tSrQ = thr_qk.make_fragment_A(thr_qk.partition_A(sQ));  // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_qk.make_fragment_B(thr_qk.partition_B(sK));  // (MMA, MMA_N, MMA_K, stage)
  Tensor tOrV = thr_pv.make_fragment_B(thr_pv.partition_B(sV));  // (MMA, MMA_N, MMA_K, stage)
  Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kBQ>, Int<kD>>{});
  Tensor acc_o_rc = make_tensor(acc_o.data(), RowColView(acc_o.layout()));
  clear(acc_o);

  // Coordinates of this thread's accumulator elements in the (q, kv) tile.
  Tensor cS = make_identity_tensor(Shape<Int<kBQ>, Int<kBKV>>{});
  Tensor tScS = thr_qk.partition_C(cS);
  Tensor tScS_rc = make_tensor(tScS.data(), RowColView(tScS.layout()));
  constexpr int kRows = size<0>(decltype(tScS_rc.layout()){});

  const RowWindows<kRows> win =
      LoadRowWindows<kRows>(p, w.ax, [&](int m) { return get<0>(tScS_rc(m, 0)); });
  const int q2 = get<1>(tScS_rc(0, 0));  // 2 * (lane % 4): the thread's first column

  float row_max[kRows], row_sum[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    row_max[m] = -INFINITY;
    row_sum[m] = 0.f;
  }

  for (int it = 0; it < w.num_kv; ++it, tile.Advance(), ahead.Advance()) {
    const int stage = it & 1;
    CpAsyncWait<1>();  // K[it] (and Q) have landed; V[it] may still be in flight
    FenceToAsyncProxy();
    __syncthreads();
    if (it + 1 < w.num_kv) load_kv(ahead.kt, stage ^ 1, false);
    CpAsyncCommit();

    Tensor acc_s = partition_fragment_C(mma_qk, Shape<Int<kBQ>, Int<kBKV>>{});
    warpgroup_fence_operand(acc_s);
    warpgroup_arrive();
    mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
#pragma unroll
    for (int kb = 0; kb < size<2>(tSrQ); ++kb) {
      cute::gemm(mma_qk, tSrQ(_, _, kb), tSrK(_, _, kb, stage), acc_s);
      mma_qk.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
    const bool unmasked = tile.Unmasked(full_lo, full_hi);
    uint32_t visible[kRows];
    if (!unmasked) ColumnMasks<kRows>(visible, tile.kt, win, p, q2);
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_s);

    Tensor s_rc = make_tensor(acc_s.data(), RowColView(acc_s.layout()));
    if (!unmasked) ApplyColumnMasks<kRows>(s_rc, visible);
    OnlineSoftmax<kRows>(s_rc, acc_o_rc, row_max, row_sum, p.scale_log2);
    Tensor p_regs = make_tensor_like<Element>(acc_s);
#pragma unroll
    for (int i = 0; i < size(acc_s); ++i) p_regs(i) = static_cast<Element>(acc_s(i));
    Tensor tOrP = make_tensor(p_regs.data(), AccumulatorAsA(p_regs.layout()));

    CpAsyncWait<1>();  // V[it] has landed; K[it + 1] may still be in flight
    FenceToAsyncProxy();
    __syncthreads();
    if (it + 1 < w.num_kv) load_kv(ahead.kt, stage ^ 1, true);
    CpAsyncCommit();

    warpgroup_fence_operand(acc_o);
    warpgroup_arrive();
    mma_pv.accumulate_ = GMMA::ScaleOut::One;
#pragma unroll
    for (int kb = 0; kb < size<2>(tOrP); ++kb) {
      cute::gemm(mma_pv, tOrP(_, _, kb), tOrV(_, _, kb, stage), acc_o);
    }
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_o);
  }
  CpAsyncWait<0>();

  // Normalise, write the log-sum-exp (natural log), stage O through shared memory (over Q).
  Tensor tOcO = thr_pv.partition_C(make_identity_tensor(Shape<Int<kBQ>, Int<kD>>{}));
  Tensor tOcO_rc = make_tensor(tOcO.data(), RowColView(tOcO.layout()));
  auto* lse = p.lse;
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    const float lse_m = FinishRow(acc_o_rc, m, row_max[m], row_sum[m], p.scale_log2);
    int64_t token;
    if (tid % 4 == 0 && w.QToken(get<0>(tOcO_rc(m, 0)), p, token)) {
      lse[(w.batch * tokens + token) * p.heads_q + w.head] = lse_m;
    }
  }
  __syncthreads();  // every warpgroup is done reading Q
  Tensor tOsO = thr_pv.partition_C(sQ);
  Tensor o_regs = make_tensor_like<Element>(acc_o);
#pragma unroll
  for (int i = 0; i < size(acc_o); ++i) o_regs(i) = static_cast<Element>(acc_o(i));
  cute::copy(o_regs, tOsO);
  __syncthreads();
  auto* o = static_cast<Element*>(p.o);
  const int chunk = tid % Cfg::kChunksPerRow;
#pragma unroll
  for (int i = 0; i < kBQ / Cfg::kRowsPerPass; ++i) {
    const int r = tid / Cfg::kChunksPerRow + i * Cfg::kRowsPerPass;
    int64_t offset;
    if (q_row(r, offset)) {
      *reinterpret_cast<uint4*>(o + offset + chunk * Cfg::kChunk) =
          *reinterpret_cast<const uint4*>(&sQ(r, chunk * Cfg::kChunk));
    }
  }
}

template <class Element, int kHeadDim>
cudaError_t LaunchFwdKernel(const FwdParams& params, cudaStream_t stream) {
  using Cfg = FwdConfig<Element, kHeadDim>;
  auto* kernel = &GnaFwdKernel<Cfg>;
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
