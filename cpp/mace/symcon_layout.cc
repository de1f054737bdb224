// Host side of an engine launch: shared-memory layout, warps per block, dtype dispatch.
#include <cuda_runtime.h>

#include <cstdlib>

#include "mace/symcon_params.h"

namespace jaxk::mace {
namespace {

constexpr int kStage = 33;
constexpr int kSegRows = 30;
constexpr int kReservedPerBlock = 1024;  // shared memory the driver reserves per block

int Align16(int x) { return (x + 15) / 16 * 16; }

}  // namespace

int SymconEngineLayout(EngineParams* p, int fsize, int warps) {
  int off = 0;
  p->sm_glist = off;
  off = Align16(off + 16 * p->ngroups);
  p->sm_yslot = off;
  off = Align16(off + 2 * kSymconNReg);
  p->sm_rec = off;
  off = Align16(off + 4 * fsize * p->nrec);  // sizeof(Rec<F>) = 4 * sizeof(F)
  p->sm_zacc = off;
  if (p->carry) off = Align16(off + fsize * p->d);
  p->sm_warp0 = off;
  int w = 0;
  p->w_v = w;
  w = Align16(w + fsize * 32 * (p->nv + 1));  // + the zero row
  p->w_stage = w;
  w = Align16(w + fsize * kStage * kSymconNReg);
  p->w_seg = w;
  p->w_rowid = w;
  if (p->carry) {
    w = Align16(w + fsize * kStage * kSegRows);
    p->w_rowid = w;
    w = Align16(w + 4 * 32);
  }
  p->warp_bytes = w;
  // The coefficient rows are only read while the records are built, before any warp region is
  // used: they alias the warp regions.
  p->sm_trow = off;
  const int trow_bytes = fsize * p->d * (p->two_src ? 2 : 1);
  const int total = off + warps * w;
  return total > off + trow_bytes ? total : Align16(off + trow_bytes);
}

cudaError_t LaunchSymconEngine(SymconDtype dtype, EngineParams p, cudaStream_t stream) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  int optin = 0, per_sm = 0;
  err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
  if (err != cudaSuccess) return err;
  const int fsize = dtype == SymconDtype::kF32 ? 4 : 8;
  p.two_src = p.t1 != p.t0;
  // Most resident warps per multiprocessor; ties go to bigger blocks. JAXK_SYMCON_WARPS (1..4)
  // caps the warps per block (for experiments).
  int max_warps = 4;
  if (const char* env = std::getenv("JAXK_SYMCON_WARPS")) {
    const int v = std::atoi(env);
    if (v >= 1 && v <= 4) max_warps = v;
  }
  int best_warps = 0, best_resident = 0;
  for (int warps = max_warps; warps >= 1; --warps) {
    const int bytes = SymconEngineLayout(&p, fsize, warps);
    if (bytes > optin) continue;
    int blocks = per_sm / (bytes + kReservedPerBlock);
    blocks = blocks < 32 ? blocks : 32;
    if (warps * blocks > 64) blocks = 64 / warps;
    if (warps * blocks > best_resident) {
      best_resident = warps * blocks;
      best_warps = warps;
    }
  }
  if (best_warps == 0) return cudaErrorInvalidConfiguration;  // program too large for smem
  const int smem = SymconEngineLayout(&p, fsize, best_warps);
  if (p.carry) {
    err = cudaMemsetAsync(p.z, 0, static_cast<size_t>(fsize) * p.ns * p.nc * p.d, stream);
    if (err != cudaSuccess) return err;
  }
  if (p.n == 0 || p.nc == 0 || p.max_items == 0) return cudaSuccess;
  return dtype == SymconDtype::kF32 ? LaunchSymconEngineF32(p, best_warps, smem, stream)
                                    : LaunchSymconEngineF64(p, best_warps, smem, stream);
}

}  // namespace jaxk::mace
