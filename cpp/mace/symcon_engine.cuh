// The symmetric-contraction engine: one kernel template that evaluates any packed sparse
// polynomial program (forward, its VJP, and the VJP of the VJP; see cuda_program.py).
//
// Block = (work item: <= 128 nodes of one species) x (one channel). Its warps take 32-node
// chunks; lane = node. Per lane: the operand vectors U[op][0..16] live in registers (compile-time
// indices only), the product table V[slot] in shared memory ([slot][lane], conflict-free). The
// per-(species, channel) coefficients T of the program's records are built once per block into
// shared memory and read as warp-uniform broadcasts. Per record: one 16-byte broadcast load and
// three table gathers (padding slots read a zero row). Carrier products are staged in a [rows][33]
// buffer and reduced across the lanes (nodes) 30 rows at a time into a per-block accumulator, then
// atomically into Z.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mace/symcon_params.h"

namespace jaxk::mace::engine {

constexpr int kStage = 33;       // row stride of the transposing stage buffers (conflict-free)
constexpr int kSegRows = 30;     // carrier rows buffered before a reduction
constexpr int kTailShift = 14;   // glist.x bits 14-15: used slots of a group's partial last record
constexpr int kUslotShift = 16;  // glist.x bits 16-25: table slot holding the group's Uf[kk]

template <typename F>
struct alignas(16) Rec {
  F t[3];      // mult * T[j] of the three slots (0 for padding)
  uint32_t q;  // three 10-bit table slots (kSymconSent = padding)
};

// Slot fields of a record's q word: three 10-bit table slots (padding = the zero row nv).
__device__ __forceinline__ uint32_t Slot0(uint32_t q) { return q & 0x3ffu; }
__device__ __forceinline__ uint32_t Slot1(uint32_t q) { return (q >> 10) & 0x3ffu; }
__device__ __forceinline__ uint32_t Slot2(uint32_t q) { return q >> 20; }

// Table gather: lane_base is the shared-memory address of this lane's entry of row 0; a row is
// 32 lanes. Inline PTX keeps the address at one shift-add per slot.
template <typename F>
struct TableRow;
template <>
struct TableRow<float> {
  static constexpr int kShift = 7;  // 32 lanes * 4 bytes
  static __device__ __forceinline__ float Load(uint32_t lane_base, uint32_t slot) {
    float v;
    asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(lane_base + (slot << kShift)));
    return v;
  }
};
template <>
struct TableRow<double> {
  static constexpr int kShift = 8;  // 32 lanes * 8 bytes
  static __device__ __forceinline__ double Load(uint32_t lane_base, uint32_t slot) {
    double v;
    asm volatile("ld.shared.f64 %0, [%1];" : "=d"(v) : "r"(lane_base + (slot << kShift)));
    return v;
  }
};

// u[0..15] = a[node, c, 0..k-1] (zero-padded), u[16] = 1, via a coalesced load through `st`.
template <typename F>
__device__ __forceinline__ void LoadOperand(F (&u)[kSymconNReg], const F* __restrict__ a, int k,
                                            int node, int nvalid, int c, int nc, F* st, int lane) {
  const int total = nvalid * k;
  for (int e0 = 0; e0 < 32 * k; e0 += 32) {  // warp-uniform trip count
    const int e = e0 + lane;
    const int nl = e / k, kc = e - nl * k;
    const int nd = __shfl_sync(0xffffffffu, node, nl & 31);
    if (e < total) st[kc * kStage + nl] = a[(static_cast<size_t>(nd) * nc + c) * k + kc];
  }
  __syncwarp();
#pragma unroll
  for (int i = 0; i < kSymconOne; ++i) {
    u[i] = (i < k && lane < nvalid) ? st[i * kStage + lane] : F(0);
  }
  u[kSymconOne] = F(1);
  __syncwarp();
}

// V[slot][lane] = U[a][i] * U[b][j] for every (kind = (a, b), i, j) the program maps to a slot.
template <typename F, int NOPS>
__device__ __forceinline__ void BuildTable(const EngineParams& p, const F (&u)[NOPS][kSymconNReg],
                                           F* v, int lane) {
#pragma unroll
  for (int a = 0; a < NOPS; ++a) {
#pragma unroll
    for (int b = a; b < NOPS; ++b) {
      const int kind = a * (5 - a) / 2 + b;  // (0,0)=0 (0,1)=1 (0,2)=2 (1,1)=3 (1,2)=4 (2,2)=5
      if (!((p.kinds >> kind) & 1)) continue;
#pragma unroll
      for (int i = 0; i < kSymconNReg; ++i) {
#pragma unroll
        for (int j = (a == b ? i : 0); j < kSymconNReg; ++j) {
          const int slot = p.smap[kind * kSymconMapSize + i * kSymconNReg + j];
          if (slot != 0xFFFF) v[slot * 32 + lane] = u[a][i] * u[b][j];
        }
      }
    }
  }
}

// Sums the buffered carrier rows over the lanes (nodes) into zacc[cj[slot]] * cm[slot].
template <typename F>
__device__ __forceinline__ void FlushCarriers(const EngineParams& p, const F* seg, const int* rowid,
                                              int rows, F* zacc, int lane) {
  __syncwarp();
  if (lane < rows) {
    F sum = F(0);
#pragma unroll 8
    for (int i = 0; i < 32; ++i) sum += seg[lane * kStage + i];
    const int slot = rowid[lane];
    const int j = p.prog[p.off_cj + slot];
    const F cm = static_cast<const F*>(p.progf)[3 * p.nrec + slot];
    if (j >= 0) atomicAdd(&zacc[j], cm * sum);
  }
  __syncwarp();
}

template <typename F, int NOPS, bool CARRY>
__global__ void __launch_bounds__(128) SymconEngineKernel(const __grid_constant__ EngineParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int item = blockIdx.x;
  if (item >= *p.nitems) return;
  const int c = blockIdx.y;
  const int s = p.items[4 * item + 0];
  const int start = p.items[4 * item + 1];
  const int count = p.items[4 * item + 2];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
  if (s < 0) {  // species out of range: zero outputs, no carrier contribution
    F* out = static_cast<F*>(p.out);
    for (int e = tid; e < count * p.mreal; e += blockDim.x) {
      const int nl = e / p.mreal, oc = e - nl * p.mreal;
      out[(static_cast<size_t>(p.perm[start + nl]) * p.nc + c) * p.mreal + oc] = F(0);
    }
    return;
  }

  int4* glist = reinterpret_cast<int4*>(smem + p.sm_glist);
  uint16_t* yslot = reinterpret_cast<uint16_t*>(smem + p.sm_yslot);
  Rec<F>* rec = reinterpret_cast<Rec<F>*>(smem + p.sm_rec);
  F* zacc = reinterpret_cast<F*>(smem + p.sm_zacc);

  // Program tables and this (species, channel)'s record coefficients.
  for (int i = tid; i < p.ngroups; i += blockDim.x) {
    const int* g = p.prog + p.off_glist + 4 * i;
    glist[i] = make_int4(g[0], g[1], g[2], g[3]);
  }
  if (CARRY) {
    for (int i = tid; i < p.mout; i += blockDim.x) {
      yslot[i] = static_cast<uint16_t>(p.prog[p.off_yslot + i]);
    }
    for (int j = tid; j < p.d; j += blockDim.x) zacc[j] = F(0);
  }
  // Stage this (species, channel)'s coefficient rows, then build the records from shared memory.
  const size_t trow = (static_cast<size_t>(s) * p.nc + c) * p.d;
  F* trow0 = reinterpret_cast<F*>(smem + p.sm_trow);
  F* trow1 = p.two_src ? trow0 + p.d : trow0;
  for (int j = tid; j < p.d; j += blockDim.x) {
    trow0[j] = static_cast<const F*>(p.t0)[trow + j];
    if (p.two_src) trow1[j] = static_cast<const F*>(p.t1)[trow + j];
  }
  __syncthreads();
  const F* mult = static_cast<const F*>(p.progf);
  for (int r = tid; r < p.nrec; r += blockDim.x) {
    Rec<F> v;
#pragma unroll
    for (int t = 0; t < 3; ++t) {
      const int tj = p.prog[p.off_tj + 3 * r + t];
      F val = F(0);
      if (tj >= 0) {
        const int j = tj & 0x3fffffff;
        val = mult[3 * r + t] * ((tj >> 30) ? trow1[j] : trow0[j]);
      }
      v.t[t] = val;
    }
    v.q = static_cast<uint32_t>(p.prog[p.off_qpack + r]);
    rec[r] = v;
  }
  __syncthreads();

  unsigned char* wbase = smem + p.sm_warp0 + warp * p.warp_bytes;
  F* vt = reinterpret_cast<F*>(wbase + p.w_v);
  F* st = reinterpret_cast<F*>(wbase + p.w_stage);
  F* seg = reinterpret_cast<F*>(wbase + p.w_seg);
  int* rowid = reinterpret_cast<int*>(wbase + p.w_rowid);
  F* out = static_cast<F*>(p.out);
  vt[p.nv * 32 + lane] = F(0);  // the zero row read by padding slots
  const uint32_t lb = static_cast<uint32_t>(__cvta_generic_to_shared(vt + lane));
  using Tab = TableRow<F>;

  for (int chunk = warp; chunk * 32 < count; chunk += nwarps) {
    const int nvalid = min(32, count - chunk * 32);
    const int node = lane < nvalid ? p.perm[start + chunk * 32 + lane] : 0;
    F u[NOPS][kSymconNReg];
#pragma unroll
    for (int op = 0; op < NOPS; ++op) {
      LoadOperand<F>(u[op], static_cast<const F*>(p.op[op]), p.k[op], node, nvalid, c, p.nc, st,
                     lane);
    }
    BuildTable<F, NOPS>(p, u, vt, lane);
    __syncwarp();

    // Output rows without groups stay zero.
    for (int o = 0; o < p.mreal; ++o) st[o * kStage + lane] = F(0);
    int rows = 0, cur_o = -1;
    F acc = F(0), yo = F(0);
    for (int gi = 0; gi < p.ngroups; ++gi) {
      const int4 gm = glist[gi];
      const int r0 = gm.x & ((1 << kTailShift) - 1);
      const int tail = (gm.x >> kTailShift) & 3;
      const uint32_t uslot = static_cast<uint32_t>(gm.x) >> kUslotShift;
      const int rc = gm.y, r1 = gm.z, o = gm.w;
      if (o != cur_o) {  // groups are sorted by output row
        if (cur_o >= 0 && cur_o < p.mreal) st[cur_o * kStage + lane] = acc;
        acc = F(0);
        cur_o = o;
        if (CARRY && lane < nvalid) yo = vt[yslot[o] * 32 + lane];
      }
      const F uk = Tab::Load(lb, uslot);
      F sum = F(0);
      int r = r0;
      if (CARRY) {
        const F f = uk * yo;
        for (; r < rc; ++r) {
          const Rec<F> rr = rec[r];
          const F v0 = Tab::Load(lb, Slot0(rr.q));
          const F v1 = Tab::Load(lb, Slot1(rr.q));
          const F v2 = Tab::Load(lb, Slot2(rr.q));
          sum = rr.t[0] * v0 + sum;
          sum = rr.t[1] * v1 + sum;
          sum = rr.t[2] * v2 + sum;
          if (rows > kSegRows - 3) {
            FlushCarriers<F>(p, seg, rowid, rows, zacc, lane);
            rows = 0;
          }
          seg[(rows + 0) * kStage + lane] = v0 * f;
          seg[(rows + 1) * kStage + lane] = v1 * f;
          seg[(rows + 2) * kStage + lane] = v2 * f;
          if (lane < 3) rowid[rows + lane] = 3 * r + lane;
          rows += 3;
        }
      }
      const int rfull = r1 - (tail ? 1 : 0);
      F s1 = F(0), s2 = F(0);  // independent chains (FMA latency)
#pragma unroll 4
      for (; r < rfull; ++r) {
        const Rec<F> rr = rec[r];
        const F v0 = Tab::Load(lb, Slot0(rr.q));
        const F v1 = Tab::Load(lb, Slot1(rr.q));
        const F v2 = Tab::Load(lb, Slot2(rr.q));
        sum = rr.t[0] * v0 + sum;
        s1 = rr.t[1] * v1 + s1;
        s2 = rr.t[2] * v2 + s2;
      }
      if (tail) {  // partial last record: skip the padding gathers
        const Rec<F> rr = rec[rfull];
        sum = rr.t[0] * Tab::Load(lb, Slot0(rr.q)) + sum;
        if (tail == 2) s1 = rr.t[1] * Tab::Load(lb, Slot1(rr.q)) + s1;
      }
      acc = (sum + s1 + s2) * uk + acc;
    }
    if (cur_o >= 0 && cur_o < p.mreal) st[cur_o * kStage + lane] = acc;
    if (CARRY && rows > 0) FlushCarriers<F>(p, seg, rowid, rows, zacc, lane);
    __syncwarp();
    // Coalesced store of the first mreal rows: out[node, c, 0..mreal-1].
    const int mreal = p.mreal;
    for (int e0 = 0; e0 < 32 * mreal; e0 += 32) {
      const int e = e0 + lane;
      const int nl = e / mreal, oc = e - nl * mreal;
      const int nd = __shfl_sync(0xffffffffu, node, nl & 31);
      if (e < nvalid * mreal)
        out[(static_cast<size_t>(nd) * p.nc + c) * mreal + oc] = st[oc * kStage + nl];
    }
    __syncwarp();
  }
  if (CARRY) {
    __syncthreads();
    F* z = static_cast<F*>(p.z) + trow;
    for (int j = tid; j < p.d; j += blockDim.x) atomicAdd(z + j, zacc[j]);
  }
}

template <typename F, int NOPS, bool CARRY>
cudaError_t Launch(const EngineParams& p, int warps, int smem, cudaStream_t stream) {
  auto kernel = SymconEngineKernel<F, NOPS, CARRY>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(p.max_items, p.nc);
  kernel<<<grid, 32 * warps, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename F>
cudaError_t LaunchAny(const EngineParams& p, int warps, int smem, cudaStream_t stream) {
  if (p.nops == 1 && !p.carry) return Launch<F, 1, false>(p, warps, smem, stream);
  if (p.nops == 2 && p.carry) return Launch<F, 2, true>(p, warps, smem, stream);
  if (p.nops == 2 && !p.carry) return Launch<F, 2, false>(p, warps, smem, stream);
  if (p.nops == 3 && p.carry) return Launch<F, 3, true>(p, warps, smem, stream);
  return cudaErrorInvalidValue;
}

}  // namespace jaxk::mace::engine
