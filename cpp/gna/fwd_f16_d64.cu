// GNA forward kernel instantiation: half_t, head_dim 64 (warp-specialised kernel).
#include "gna/fwd_launch_ws.cuh"

namespace jaxk::gna {

cudaError_t LaunchFwdF16_D64(const FwdParams& params, const FwdTmaMaps* tma, cudaStream_t stream) {
  return LaunchFwdWsKernel<cute::half_t, 64>(params, tma, stream);
}

}  // namespace jaxk::gna
