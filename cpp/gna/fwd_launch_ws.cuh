// Launch of the warp-specialised GNA forward kernel (head_dim <= 128): the TMA producer when the
// host built tensor maps for the call (persistent: params.max_ctas CTAs at most), else the
// cp.async producer (one CTA per work item).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "gna/fwd_kernel_tma.cuh"
#include "gna/fwd_kernel_ws.cuh"
#include "gna/fwd_params.h"
#include "gna/fwd_ws_config.cuh"

namespace jaxk::gna {

// One CTA per work item, or at most `max_ctas` (> 0) for the persistent kernel.
template <class Cfg, class Kernel, class... Args>
cudaError_t LaunchWs(Kernel* kernel, const FwdParams& params, int max_ctas, cudaStream_t stream,
                     const Args&... args) {
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  int64_t blocks = params.q_tiles * params.heads_q * params.batch;
  if (blocks <= 0) return cudaSuccess;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  if (max_ctas > 0 && blocks > max_ctas) blocks = max_ctas;
  kernel<<<static_cast<unsigned>(blocks), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(params,
                                                                                    args...);
  return cudaGetLastError();
}

template <class Element, int kHeadDim>
cudaError_t LaunchFwdWsKernel(const FwdParams& params, const FwdTmaMaps* tma, cudaStream_t stream) {
  if (tma != nullptr) {
    using Cfg = WsConfig<Element, kHeadDim, true>;
    return LaunchWs<Cfg>(&GnaFwdTmaKernel<Cfg>, params, params.max_ctas, stream, *tma);
  }
  using Cfg = WsConfig<Element, kHeadDim, false>;
  return LaunchWs<Cfg>(&GnaFwdWsKernel<Cfg>, params, 0, stream);
}

}  // namespace jaxk::gna
