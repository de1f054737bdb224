// Small device helpers of the GNA forward kernel: cp.async, fragment views, tile coordinates.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cute/tensor.hpp>

#include "gna/fwd_params.h"

namespace jaxk::gna {

// 16-byte global -> shared copy; when `valid` is false the destination is zero-filled and the
// source is not read (it must still be a valid address).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Shared memory written by the generic proxy (cp.async, st.shared) is about to be read by wgmma.
__device__ __forceinline__ void FenceToAsyncProxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// 2^x on the special function unit (flushes denormals; exp2(-inf) = 0).
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// One axis tile of the launch table (jax_gna/tiling.py, ENTRY_FIELDS).
struct AxisTile {
  int group, n_g, q_start, win_base, kv_lo, kv_hi, full_lo, full_hi;
};

__device__ __forceinline__ AxisTile LoadAxisTile(const int32_t* entry) {
  AxisTile t;
  t.group = __ldg(entry + 0);
  t.n_g = __ldg(entry + 1);
  t.q_start = __ldg(entry + 2);
  t.win_base = __ldg(entry + 3);
  t.kv_lo = __ldg(entry + 4);
  t.kv_hi = __ldg(entry + 5);
  t.full_lo = __ldg(entry + 6);
  t.full_hi = __ldg(entry + 7);
  return t;
}

// Splits a row index of a multi-dimensional tile (axis 2 fastest) into per-axis offsets.
__device__ __forceinline__ void SplitRow(int r, const int32_t (&shift)[3], int (&c)[3]) {
  c[2] = r & ((1 << shift[2]) - 1);
  c[1] = (r >> shift[2]) & ((1 << shift[1]) - 1);
  c[0] = r >> (shift[1] + shift[2]);
}

// Token (raster index in the grid of one batch entry) of in-group coordinates `j` of the axis
// tiles `ax`; false when some coordinate is past its group (padding).
__device__ __forceinline__ bool TokenOf(const int (&j)[3], const AxisTile (&ax)[3],
                                        const FwdParams& p, int64_t& token) {
  const bool valid = j[0] < ax[0].n_g && j[1] < ax[1].n_g && j[2] < ax[2].n_g;
  const int64_t x0 = int64_t(j[0]) * p.dil[0] + ax[0].group;
  const int64_t x1 = int64_t(j[1]) * p.dil[1] + ax[1].group;
  const int64_t x2 = int64_t(j[2]) * p.dil[2] + ax[2].group;
  token = (x0 * p.n[1] + x1) * p.n[2] + x2;
  return valid;
}

// Views a wgmma accumulator fragment ((2,2,V),M,N) as (rows, cols) = ((2,M),(2,V,N)).
template <class Layout>
__device__ __forceinline__ constexpr auto RowColView(Layout l) {
  using namespace cute;
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)),
                     make_layout(get<0, 0>(l), get<0, 2>(l), get<2>(l)));
}

// Reinterprets a 64xN accumulator fragment ((2,2,V),1,1) as the register A operand
// ((2,2,2),1,V/2) of a 64xKx16 wgmma: k-block kb holds accumulator columns 16kb..16kb+15.
template <class Layout>
__device__ __forceinline__ constexpr auto AccumulatorAsA(Layout l) {
  using namespace cute;
  static_assert(size<1>(Layout{}) == 1 && size<2>(Layout{}) == 1);
  constexpr int kV = size<0, 2>(Layout{});
  return make_layout(make_shape(make_shape(_2{}, _2{}, _2{}), _1{}, Int<kV / 2>{}),
                     make_stride(make_stride(stride<0, 0>(l), stride<0, 1>(l), stride<0, 2>(l)),
                                 stride<1>(l), _2{} * stride<0, 2>(l)));
}

}  // namespace jaxk::gna
