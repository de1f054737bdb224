// GNA forward kernel instantiation: half_t, head_dim 128 (warp-specialised kernel).
#include "gna/fwd_launch_ws.cuh"

namespace jaxk::gna {

cudaError_t LaunchFwdF16_D128(const FwdParams& params, const FwdTmaMaps* tma, cudaStream_t stream) {
  return LaunchFwdWsKernel<cute::half_t, 128>(params, tma, stream);
}

}  // namespace jaxk::gna
