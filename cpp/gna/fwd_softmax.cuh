// Per-KV-tile math of the GNA forward kernel on a warpgroup's wgmma accumulators: scaling,
// the fine-grained neighbourhood mask from the launch tables, and the online softmax.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
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

// The fine-grained mask of a partial KV tile: keys outside a row's window (or past the grid:
// windows never reach there) get -inf. It is kept as one 32-bit visibility mask per row of the
// thread, worked out before the tile's GEMM is waited for, so that only the selects stand
// between the wait and the exponentials. Bit n is column n of the thread's (rows, cols) view of
// a 64xN wgmma accumulator (N = 128 or 64 KV rows: 32 or 16 columns): KV-tile row
// 2q + (n & 1) + 8 (n >> 1), where q = lane % 4 (`q2` = 2q is the thread's column 0). Those rows
// grow with n. An axis's coordinate is bits [pos, pos + bits) of a KV-tile row (SplitRow order,
// axis 2 fastest), and the window test is separable: the rows whose coordinate lies in [lo, hi)
// form, within each block of 2^(pos + bits) rows, one run of consecutive n, which repeats block
// after block. The three axes' masks are ANDed.

// How many of the thread's columns have a KV-tile row below v (0 <= v <= N).
__host__ __device__ __forceinline__ int ColumnsBelow(int v, int q2) {
  return 2 * (v >> 3) + min(max((v & 7) - q2, 0), 2);
}

// Bits [0, k) set (0 <= k <= 32).
__host__ __device__ __forceinline__ uint32_t LowBits(int k) {
  return k >= 32 ? ~0u : (1u << k) - 1u;
}

// Bit n: whether column n's coordinate on an axis at bits [pos, pos + bits) lies in [lo, hi)
// (tile-local coordinates).
__host__ __device__ __forceinline__ uint32_t AxisColumnMask(int lo, int hi, int pos, int bits,
                                                            int q2) {
  const int extent = 1 << bits;
  lo = min(max(lo, 0), extent);
  hi = min(max(hi, 0), extent);
  if (pos + bits < 3) {  // the coordinate lies in the bits of 2q + (n & 1)
    const int f0 = (q2 >> pos) & (extent - 1);
    const int f1 = ((q2 + 1) >> pos) & (extent - 1);
    return ((lo <= f0) & (f0 < hi) ? 0x55555555u : 0u) |
           ((lo <= f1) & (f1 < hi) ? 0xAAAAAAAAu : 0u);
  }
  // A block of 2^(pos + bits) rows is 2^(pos + bits - 2) consecutive n.
  const int period = pos + bits - 2;
  const uint32_t run = LowBits(ColumnsBelow(hi << pos, q2)) & ~LowBits(ColumnsBelow(lo << pos, q2));
  const uint32_t repeat = period >= 5   ? 1u
                          : period == 4 ? 0x00010001u
                          : period == 3 ? 0x01010101u
                          : period == 2 ? 0x11111111u
                                        : 0x55555555u;
  return run * repeat;
}

// Visibility masks of KV tile `kv_tile` for the thread's rows.
template <int kRows>
__device__ __forceinline__ void ColumnMasks(uint32_t (&visible)[kRows], const int (&kv_tile)[3],
                                            const RowWindows<kRows>& win, const FwdParams& p,
                                            int q2) {
  const int pos[3] = {p.kv_shift[1] + p.kv_shift[2], p.kv_shift[2], 0};
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    uint32_t v = ~0u;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const int lo = win.lo[m][a] - (kv_tile[a] << p.kv_shift[a]);
      v &= AxisColumnMask(lo, lo + win.len[m][a], pos[a], p.kv_shift[a], q2);
    }
    visible[m] = v;
  }
}

// Sets the scores of invisible columns to -inf ((rows, cols) view).
template <int kRows, class TensorS>
__device__ __forceinline__ void ApplyColumnMasks(TensorS& s, const uint32_t (&visible)[kRows]) {
  using namespace cute;
  constexpr int kCols = decltype(size<1>(s))::value;
  static_assert(kCols == 32 || kCols == 16, "a 64x128 or 64x64 wgmma accumulator");
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
#pragma unroll
    for (int n = 0; n < kCols; ++n) {
      if (!((visible[m] >> n) & 1u)) s(m, n) = -INFINITY;
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

// What one online-softmax step carries from its exponentials to its rescale: each row's previous
// base, whether it was raised, and this lane's sum of the tile's probabilities.
template <int kRows>
struct SoftmaxStep {
  float old_max[kRows];
  float sum[kRows];
  bool raise[kRows];
  bool any;  // some row of this thread raised its base
};

// First half of an online-softmax step on raw scores (the scale is positive, so the raw maximum
// is the scaled one): updates each row's base (raw units, `row_max`) and turns `s` ((rows,
// cols) view) into probabilities exp2(s * scale_log2 - base * scale_log2). A row is spread over
// 4 consecutive lanes: maxima are shared (xor 1, 2), sums stay per lane until the end. The
// output rescale is left to SoftmaxRescale, so that nothing but the maxima stands between the
// GEMM wait and the exponentials.
template <int kRows, class TensorS>
__device__ __forceinline__ SoftmaxStep<kRows> SoftmaxExponentials(TensorS& s,
                                                                  float (&row_max)[kRows],
                                                                  float scale_log2) {
  using namespace cute;
  constexpr int kCols = decltype(size<1>(s))::value;
  SoftmaxStep<kRows> step;
  step.any = false;
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    float mx = RowMax<kCols>(s, m);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
    // The first visible key always raises the base. Selects, not branches: this sits on the
    // path from the GEMM wait to the exponentials.
    step.old_max[m] = row_max[m];
    step.raise[m] = (mx > row_max[m]) &
                    ((row_max[m] == -INFINITY) | ((mx - row_max[m]) * scale_log2 > kRebaseLog2));
    row_max[m] = step.raise[m] ? mx : row_max[m];
    step.any |= step.raise[m];
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
    step.sum[m] = sum;
  }
  return step;
}

// Second half: where a warp raised a base (rare after the first tiles: one warp-uniform branch),
// rescales the sums and the output accumulator `o` ((rows, cols) view) by exp2(old - new base)
// (0 on the first raise, where both are still zero), then adds the tile's sums.
template <int kRows, class TensorO>
__device__ __forceinline__ void SoftmaxRescale(const SoftmaxStep<kRows>& step, TensorO& o,
                                               const float (&row_max)[kRows],
                                               float (&row_sum)[kRows], float scale_log2) {
  using namespace cute;
  if (__any_sync(0xffffffff, step.any)) {
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      const float alpha = step.raise[m] ? Exp2((step.old_max[m] - row_max[m]) * scale_log2) : 1.f;
      row_sum[m] *= alpha;
#pragma unroll
      for (int n = 0; n < size<1>(o); ++n) o(m, n) *= alpha;
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) row_sum[m] += step.sum[m];
}

// One online-softmax step: SoftmaxExponentials, then SoftmaxRescale.
template <int kRows, class TensorS, class TensorO>
__device__ __forceinline__ void OnlineSoftmax(TensorS& s, TensorO& o, float (&row_max)[kRows],
                                              float (&row_sum)[kRows], float scale_log2) {
  const SoftmaxStep<kRows> step = SoftmaxExponentials<kRows>(s, row_max, scale_log2);
  SoftmaxRescale<kRows>(step, o, row_max, row_sum, scale_log2);
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
