// Plain-C++ interface between the symmetric-contraction FFI handlers (.cc) and the CUDA kernels
// (.cu). Semantics of every kernel: jax_mace/symmetric_contraction/cuda_program.py.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace jaxk::mace {

constexpr int kSymconOne = 16;         // register index of the constant 1 in an operand vector
constexpr int kSymconNReg = 17;        // registers per operand vector
constexpr int kSymconMaxSlots = 1023;  // table rows incl. the zero row (10-bit slot field)
constexpr int kSymconMaxRecords = 1 << 14;
constexpr int kSymconItemNodes = 128;  // nodes per work item (one species each)
constexpr int kSymconKinds = 6;        // operand pairs (0,0) (0,1) (0,2) (1,1) (1,2) (2,2)
constexpr int kSymconMapSize = kSymconNReg * kSymconNReg;

enum class SymconDtype { kF32, kF64 };

// Counting sort of the nodes by species: perm [n] groups node ids by species; items [max_items][4]
// = (species, first position in perm, node count <= 128, 0); *nitems = number of items;
// max_items >= ceil(n / 128) + ns + 1. work [ns + 2] is scratch. Nodes whose species is outside
// [0, ns) get items of species -1: the engine writes zeros for them (as a one-hot weight lookup).
struct SortParams {
  int n = 0;
  int ns = 0;
  int max_items = 0;
  const int32_t* species = nullptr;
  int32_t* perm = nullptr;
  int32_t* items = nullptr;
  int32_t* nitems = nullptr;
  int32_t* work = nullptr;
};
cudaError_t LaunchSymconSort(const SortParams& p, cudaStream_t stream);

// Tbase: out[s, c, j] = sum_{p in [tb_start[j], tb_start[j+1])} tb_coeff[p] * in[s, tb_w[p], c].
// Wgrad (its transpose): out[s, w, c] = sum_{p : tb_w[p] = w} tb_coeff[p] * in[s, c, term(p)].
struct TbaseParams {
  SymconDtype dtype = SymconDtype::kF32;
  int ns = 0;  // species
  int nw = 0;  // weights per channel
  int nc = 0;  // channels
  int d = 0;   // base terms
  const void* in = nullptr;
  const int32_t* tb_start = nullptr;
  const int32_t* tb_w = nullptr;
  const void* tb_coeff = nullptr;
  void* out = nullptr;
};
cudaError_t LaunchSymconTbase(const TbaseParams& p, cudaStream_t stream);
cudaError_t LaunchSymconWgrad(const TbaseParams& p, cudaStream_t stream);

// One engine launch: a packed program (see cuda_program.EngineProgram) over all nodes/channels.
// Passed by value as the kernel parameter; smap is read through the constant bank.
struct EngineParams {
  const void* op[3] = {nullptr, nullptr, nullptr};  // operands [n, nc, k[i]]
  int k[3] = {0, 0, 0};
  const void* t0 = nullptr;  // coefficient tables [ns, nc, d]
  const void* t1 = nullptr;
  const int32_t* perm = nullptr;
  const int32_t* items = nullptr;
  const int32_t* nitems = nullptr;
  const int32_t* prog = nullptr;  // packed int32 program
  const void* progf = nullptr;    // [mult (3 nrec), cm (3 nrec)] in the operand dtype
  void* out = nullptr;            // [n, nc, mreal]
  void* z = nullptr;              // [ns, nc, d] (carrier sums), zeroed by the launcher
  int n = 0, nc = 0, ns = 0, d = 0, max_items = 0;
  int nops = 0, mout = 0, mreal = 0, nv = 0, kinds = 0, nrec = 0, carry = 0;
  int ngroups = 0, off_glist = 0, off_yslot = 0, off_qpack = 0, off_tj = 0, off_cj = 0;
  // Shared-memory layout in bytes (filled by SymconEngineLayout).
  int two_src = 0;  // t1 differs from t0 (stage both coefficient rows)
  int sm_trow = 0, sm_glist = 0, sm_yslot = 0, sm_rec = 0, sm_zacc = 0, sm_warp0 = 0;
  int warp_bytes = 0, w_v = 0, w_stage = 0, w_seg = 0, w_rowid = 0;
  uint16_t smap[kSymconKinds * kSymconMapSize] = {};  // table slot of (kind, i, j) or 0xFFFF
};

// Fills the shared-memory layout for `warps` warps per block; returns the bytes it needs.
int SymconEngineLayout(EngineParams* p, int fsize, int warps);
cudaError_t LaunchSymconEngine(SymconDtype dtype, EngineParams p, cudaStream_t stream);
cudaError_t LaunchSymconEngineF32(const EngineParams& p, int warps, int smem, cudaStream_t stream);
cudaError_t LaunchSymconEngineF64(const EngineParams& p, int warps, int smem, cudaStream_t stream);

}  // namespace jaxk::mace
