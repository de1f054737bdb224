// Driver API functions reached through the CUDA runtime's entry-point query, so the kernel
// libraries need no link against libcuda (present only where a driver is installed).
#pragma once

#include <cuda_runtime.h>

namespace jaxk {

// Sets *fn to the driver function `symbol` (its CUDA 12.0 ABI); false when it is missing.
template <class Fn>
bool DriverEntry(const char* symbol, Fn* fn) {
  void* ptr = nullptr;
  cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
  const cudaError_t err =
      cudaGetDriverEntryPointByVersion(symbol, &ptr, 12000, cudaEnableDefault, &found);
#else
  const cudaError_t err = cudaGetDriverEntryPoint(symbol, &ptr, cudaEnableDefault, &found);
#endif
  if (err != cudaSuccess || found != cudaDriverEntryPointSuccess || ptr == nullptr) return false;
  *fn = reinterpret_cast<Fn>(ptr);
  return true;
}

}  // namespace jaxk
