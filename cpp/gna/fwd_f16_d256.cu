// GNA forward kernel instantiation: half_t, head_dim 256 (non-specialised kernel: at head_dim 256
// the accumulators leave no registers for warp specialisation).
#include "gna/fwd_kernel.cuh"

namespace jaxk::gna {

cudaError_t LaunchFwdF16_D256(const FwdParams& params, const FwdTmaMaps* /*tma*/,
                              cudaStream_t stream) {
  return LaunchFwdKernel<cute::half_t, 256>(params, stream);
}

}  // namespace jaxk::gna
