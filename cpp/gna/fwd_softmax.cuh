// Per-KV-tile math of the GNA forward kernel on a warpgroup's wgmma accumulators: scaling,
// the fine-grained neighbourhood mask from the launch tables, and the online softmax.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cute/tensor.hpp>

#include "gna/fwd_device.cuh"
#include "gna/fwd_params.h"

namespace jaxk::gna {

// Key window (in-group, per axis) of each of a thread's query rows, read from the tables.
// Padded queries borrow the last query of their group: they are computed, never stored.
template <int kRows>
struct RowWindows {
  int lo[kRows][3];
  int len[kRows][3];
};

template <int kRows, class RowCoord>
__device__ __forceinline__ RowWindows<kRows> LoadRowWindows(const FwdParams& p,
                                                            const AxisTile (&ax)[3],
                                                            RowCoord row_of) {
  RowWindows<kRows> w;
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    int c[3];
    SplitRow(row_of(m), p.q_shift, c);
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const int j = min(ax[a].q_start + c[a], ax[a].n_g - 1);
      const int lo = __ldg(p.tables + ax[a].win_base + 2 * j);
      w.lo[m][a] = lo;
      w.len[m][a] = __ldg(p.tables + ax[a].win_base + 2 * j + 1) - lo;
    }
  }
  return w;
}

// Masks the raw scores (rows, cols view) of a partial KV tile: keys outside a row's window (or
// past the grid: windows never reach there) become -inf. `col_of(n)` is the column of element
// n in the KV tile.
template <int kRows, class TensorS, class ColCoord>
__device__ __forceinline__ void MaskScores(TensorS& s, const int (&kv_tile)[3],
                                           const RowWindows<kRows>& win, const FwdParams& p,
                                           ColCoord col_of) {
  using namespace cute;
  constexpr int kCols = decltype(size<1>(s))::value;
#pragma unroll
  for (int n = 0; n < kCols; ++n) {
    int c[3];
    SplitRow(col_of(n), p.kv_shift, c);
#pragma unroll
    for (int a = 0; a < 3; ++a) c[a] += kv_tile[a] << p.kv_shift[a];
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      bool visible = true;
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        visible = visible &&
                  static_cast<unsigned>(c[a] - win.lo[m][a]) < static_cast<unsigned>(win.len[m][a]);
      }
      if (!visible) s(m, n) = -INFINITY;
    }
  }
}

// Largest of a row's values, as a tree (max is exact in any order; a chain would be kCols deep).
template <int kCols, class TensorS>
__device__ __forceinline__ float RowMax(const TensorS& s, int m) {
  float v[kCols];
#pragma unroll
  for (int n = 0; n < kCols; ++n) v[n] = s(m, n);
#pragma unroll
  for (int w = 1; w < kCols; w *= 2) {
#pragma unroll
    for (int i = 0; i + w < kCols; i += 2 * w) v[i] = fmaxf(v[i], v[i + w]);
  }
  return v[0];
}

// A row's exponentials are taken against a base, its running maximum when last raised. The base
// is raised (and the output rescaled) only where the maximum grows by more than kRebaseLog2
// (log2 units of scaled scores), so probabilities stay below 2^kRebaseLog2, well inside the
// fp32 sums and the bf16/fp16 P operand, and most tiles skip the output rescale
// (FlashAttention-4's conditional rescaling; exact: the sum, the output and the LSE share the
// base).
constexpr float kRebaseLog2 = 8.f;

// One online-softmax step on raw scores (the scale is positive, so the raw maximum is the
// scaled one): updates each row's base (raw units, `row_max`) and sum, turns `s` into
// probabilities exp2(s * scale_log2 - base * scale_log2) and rescales the output accumulator
// `o` (both in (rows, cols) views) where a warp raised a base. A row is spread over 4
// consecutive lanes: maxima are shared (xor 1, 2), sums stay per lane until the end.
template <int kRows, class TensorS, class TensorO>
__device__ __forceinline__ void OnlineSoftmax(TensorS& s, TensorO& o, float (&row_max)[kRows],
                                              float (&row_sum)[kRows], float scale_log2) {
  using namespace cute;
  constexpr int kCols = decltype(size<1>(s))::value;
  float old_max[kRows];
  bool raise[kRows];
  bool any = false;
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    float mx = RowMax<kCols>(s, m);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
    // The first visible key always raises the base. Selects, not branches: this sits on the
    // path from the GEMM wait to the exponentials.
    old_max[m] = row_max[m];
    raise[m] = (mx > old_max[m]) &
               ((old_max[m] == -INFINITY) | ((mx - old_max[m]) * scale_log2 > kRebaseLog2));
    row_max[m] = raise[m] ? mx : old_max[m];
    any |= raise[m];
  }
  // Rare after the first tiles: one warp-uniform branch for the rescale factors (exp2(-inf) = 0
  // on the first raise, where sum and output are still zero) and the rescale itself.
  if (__any_sync(0xffffffff, any)) {
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      const float alpha = raise[m] ? Exp2((old_max[m] - row_max[m]) * scale_log2) : 1.f;
      row_sum[m] *= alpha;
#pragma unroll
      for (int n = 0; n < size<1>(o); ++n) o(m, n) *= alpha;
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    // A row with nothing visible yet keeps base 0: exp2(-inf) = 0 everywhere, no NaN.
    const float base = row_max[m] == -INFINITY ? 0.f : row_max[m] * scale_log2;
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < kCols; ++n) {
      const float e = Exp2(fmaf(s(m, n), scale_log2, -base));
      s(m, n) = e;
      sum += e;
    }
    row_sum[m] += sum;
  }
}

// Final normalisation of a row: returns the natural-log LSE (-inf for an empty row) and
// scales the row of `o` by 1 / sum. `row_sum` is this lane's partial sum.
template <class TensorO>
__device__ __forceinline__ float FinishRow(TensorO& o, int m, float row_max, float row_sum,
                                           float scale_log2) {
  using namespace cute;
  float sum = row_sum;
  sum += __shfl_xor_sync(0xffffffff, sum, 1);
  sum += __shfl_xor_sync(0xffffffff, sum, 2);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
  for (int n = 0; n < size<1>(o); ++n) o(m, n) *= inv;
  return sum > 0.f ? (row_max * scale_log2 + log2f(sum)) * 0.6931471805599453f : -INFINITY;
}

}  // namespace jaxk::gna
