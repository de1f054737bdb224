// See launch_report.h.
#include "mace/launch_report.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace jaxk::mace {

void ReportLaunch(cudaStream_t stream, const char* call, const char* op) {
  const char* env = std::getenv("JAX_MACE_DEBUG");
  if (env == nullptr || std::strcmp(env, "1") != 0) return;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const bool captured = cudaStreamIsCapturing(stream, &status) == cudaSuccess &&
                        status == cudaStreamCaptureStatusActive;
  std::fprintf(stderr, "%s%s: %s\n", call, op,
               captured ? "recorded into a CUDA graph" : "launched");
}

}  // namespace jaxk::mace
