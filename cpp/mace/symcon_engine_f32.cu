// Engine instantiations for float32 (one translation unit per dtype keeps builds parallel).
#include "mace/symcon_engine.cuh"

namespace jaxk::mace {

cudaError_t LaunchSymconEngineF32(const EngineParams& p, int warps, int smem, cudaStream_t stream) {
  return engine::LaunchAny<float>(p, warps, smem, stream);
}

}  // namespace jaxk::mace
