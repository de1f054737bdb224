// JAX_MACE_DEBUG=1: every FFI call of the mace kernels reports on stderr how its work reached the
// GPU: launched, or recorded into a CUDA graph (XLA's command buffers capture the handler's
// stream).
#pragma once

#include <cuda_runtime.h>

namespace jaxk::mace {

// Call once the handler has enqueued its work on `stream`; reads $JAX_MACE_DEBUG at every call.
// The call is named `call` followed by `op` ("jaxk_symcon_" "sort").
void ReportLaunch(cudaStream_t stream, const char* call, const char* op = "");

}  // namespace jaxk::mace
