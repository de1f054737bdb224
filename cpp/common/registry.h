// Lists the XLA FFI handlers that a kernel library exports, so that a small host-compiled
// nanobind module can hand them to Python as capsules without seeing any CUDA code.
#pragma once

#include <vector>

namespace jaxk {

struct HandlerEntry {
  const char* name;  // FFI target name, registered with jax.ffi.register_ffi_target
  void* handler;     // XLA_FFI_Handler* produced by XLA_FFI_DEFINE_HANDLER_SYMBOL
};

namespace gna {
std::vector<HandlerEntry> Handlers();
}  // namespace gna

namespace mace {
std::vector<HandlerEntry> Handlers();
}  // namespace mace

}  // namespace jaxk
