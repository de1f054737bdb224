// The per-species coefficient table TW[s, c, j] = sum_p coeff_p W[s, w_p, c] of the base terms,
// and its transpose (the weight gradient from the carrier sums Z[s, c, j]). Both are linear maps
// over the same term -> paths CSR; blocks own (species, 32 channels, a range of terms) and
// transpose through smem so every global access is coalesced.
#include <cuda_runtime.h>

#include <cstdint>

#include "mace/symcon_params.h"

namespace jaxk::mace {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;
constexpr int kTileStride = 33;
constexpr int kWgradTiles = 8;  // 32-term tiles per wgrad block

// Block = (species, 32 channels, 32 terms); warps take terms, lanes take channels.
template <typename F>
__global__ void __launch_bounds__(kThreads)
    TbaseKernel(const F* __restrict__ w, int nw, int nc, int d,
                const int32_t* __restrict__ tb_start, const int32_t* __restrict__ tb_w,
                const F* __restrict__ tb_coeff, F* __restrict__ out) {
  __shared__ F tile[kTile * kTileStride];
  const int s = blockIdx.x, c0 = blockIdx.y * kTile, jb = blockIdx.z * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = c0 + lane;
  const F* ws = w + static_cast<size_t>(s) * nw * nc;
  for (int jl = warp; jl < kTile; jl += kWarps) {
    const int j = jb + jl;
    F acc = F(0);
    if (j < d && c < nc) {
      const int p0 = tb_start[j], p1 = tb_start[j + 1];
      for (int p = p0; p < p1; ++p) acc += tb_coeff[p] * ws[static_cast<size_t>(tb_w[p]) * nc + c];
    }
    tile[jl * kTileStride + lane] = acc;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kTile * kTile; idx += kThreads) {
    const int cl = idx / kTile, jl = idx % kTile;
    if (c0 + cl < nc && jb + jl < d) {
      out[(static_cast<size_t>(s) * nc + c0 + cl) * d + jb + jl] = tile[jl * kTileStride + cl];
    }
  }
}

// Block = (species, 32 channels, kWgradTiles * 32 terms): partial sums over its terms in smem,
// then atomically into gw (zeroed by the launcher).
template <typename F>
__global__ void __launch_bounds__(kThreads)
    WgradKernel(const F* __restrict__ z, int nw, int nc, int d,
                const int32_t* __restrict__ tb_start, const int32_t* __restrict__ tb_w,
                const F* __restrict__ tb_coeff, F* __restrict__ gw) {
  extern __shared__ __align__(16) unsigned char wgrad_smem[];
  F* acc = reinterpret_cast<F*>(wgrad_smem);  // [nw][32]
  F* tile = acc + nw * kTile;                 // [32 terms][33]
  const int s = blockIdx.x, c0 = blockIdx.y * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int i = threadIdx.x; i < nw * kTile; i += kThreads) acc[i] = F(0);
  const int z0 = static_cast<int>(blockIdx.z) * kWgradTiles * kTile;
  const int j_end = min(d, z0 + kWgradTiles * kTile);
  for (int jb = z0; jb < j_end; jb += kTile) {
    __syncthreads();  // previous tile consumed (and acc zeroed on the first pass)
    for (int idx = threadIdx.x; idx < kTile * kTile; idx += kThreads) {
      const int cl = idx / kTile, jl = idx % kTile;
      F v = F(0);
      if (c0 + cl < nc && jb + jl < j_end) {
        v = z[(static_cast<size_t>(s) * nc + c0 + cl) * d + jb + jl];
      }
      tile[jl * kTileStride + cl] = v;
    }
    __syncthreads();
    for (int jl = warp; jl < kTile; jl += kWarps) {
      const int j = jb + jl;
      if (j >= j_end) continue;
      const F v = tile[jl * kTileStride + lane];
      const int p0 = tb_start[j], p1 = tb_start[j + 1];
      for (int p = p0; p < p1; ++p) atomicAdd(&acc[tb_w[p] * kTile + lane], tb_coeff[p] * v);
    }
  }
  __syncthreads();
  for (int w = warp; w < nw; w += kWarps) {
    const F v = acc[w * kTile + lane];
    if (c0 + lane < nc && v != F(0)) {
      atomicAdd(&gw[(static_cast<size_t>(s) * nw + w) * nc + c0 + lane], v);
    }
  }
}

template <typename F>
cudaError_t Tbase(const TbaseParams& p, cudaStream_t stream) {
  if (p.ns == 0 || p.nc == 0 || p.d == 0) return cudaSuccess;
  const dim3 grid(p.ns, (p.nc + kTile - 1) / kTile, (p.d + kTile - 1) / kTile);
  TbaseKernel<F><<<grid, kThreads, 0, stream>>>(
      static_cast<const F*>(p.in), p.nw, p.nc, p.d, p.tb_start, p.tb_w,
      static_cast<const F*>(p.tb_coeff), static_cast<F*>(p.out));
  return cudaGetLastError();
}

template <typename F>
cudaError_t Wgrad(const TbaseParams& p, cudaStream_t stream) {
  if (p.ns == 0 || p.nc == 0 || p.nw == 0) return cudaSuccess;
  cudaError_t err =
      cudaMemsetAsync(p.out, 0, sizeof(F) * static_cast<size_t>(p.ns) * p.nw * p.nc, stream);
  if (err != cudaSuccess || p.d == 0) return err;
  const int zblocks = (p.d + kWgradTiles * kTile - 1) / (kWgradTiles * kTile);
  const dim3 grid(p.ns, (p.nc + kTile - 1) / kTile, zblocks);
  const size_t smem = sizeof(F) * (static_cast<size_t>(p.nw) * kTile + kTile * kTileStride);
  err = cudaFuncSetAttribute(WgradKernel<F>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  WgradKernel<F><<<grid, kThreads, smem, stream>>>(
      static_cast<const F*>(p.in), p.nw, p.nc, p.d, p.tb_start, p.tb_w,
      static_cast<const F*>(p.tb_coeff), static_cast<F*>(p.out));
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchSymconTbase(const TbaseParams& p, cudaStream_t stream) {
  return p.dtype == SymconDtype::kF32 ? Tbase<float>(p, stream) : Tbase<double>(p, stream);
}

cudaError_t LaunchSymconWgrad(const TbaseParams& p, cudaStream_t stream) {
  return p.dtype == SymconDtype::kF32 ? Wgrad<float>(p, stream) : Wgrad<double>(p, stream);
}

}  // namespace jaxk::mace
