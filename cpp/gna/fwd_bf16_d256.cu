// GNA forward kernel instantiation: bfloat16_t, head_dim 256 (non-specialised kernel: at head_dim
// 256 the accumulators leave no registers for warp specialisation).
#include "gna/fwd_kernel.cuh"

namespace jaxk::gna {

cudaError_t LaunchFwdBf16_D256(const FwdParams& params, const FwdTmaMaps* /*tma*/,
                               cudaStream_t stream) {
  return LaunchFwdKernel<cute::bfloat16_t, 256>(params, stream);
}

}  // namespace jaxk::gna
