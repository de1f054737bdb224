// GNA forward kernel instantiation: half_t, head_dim 32 (warp-specialised kernel).
#include "gna/fwd_launch_ws.cuh"

namespace jaxk::gna {

cudaError_t LaunchFwdF16_D32(const FwdParams& params, const FwdTmaMaps* tma, cudaStream_t stream) {
  return LaunchFwdWsKernel<cute::half_t, 32>(params, tma, stream);
}

}  // namespace jaxk::gna
