// GNA forward kernel instantiation: bfloat16_t, head_dim 32 (warp-specialised kernel).
#include "gna/fwd_launch_ws.cuh"

namespace jaxk::gna {

cudaError_t LaunchFwdBf16_D32(const FwdParams& params, const FwdTmaMaps* tma, cudaStream_t stream) {
  return LaunchFwdWsKernel<cute::bfloat16_t, 32>(params, tma, stream);
}

}  // namespace jaxk::gna
