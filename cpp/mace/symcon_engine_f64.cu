// Engine instantiations for float64 (one translation unit per dtype keeps builds parallel).
#include "mace/symcon_engine.cuh"

namespace jaxk::mace {

cudaError_t LaunchSymconEngineF64(const EngineParams& p, int warps, int smem, cudaStream_t stream) {
  return engine::LaunchAny<double>(p, warps, smem, stream);
}

}  // namespace jaxk::mace
