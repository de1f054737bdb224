// The XLA FFI handlers of the mace kernels. Each kernel's handler file declares its symbol here.
#include "common/registry.h"

#include "mace/symcon_handlers.h"
#include "mace/symjit.h"

namespace jaxk::mace {

std::vector<HandlerEntry> Handlers() {
  return {
      {"jaxk_symcon_sort", reinterpret_cast<void*>(SymconSort)},
      {"jaxk_symcon_tbase", reinterpret_cast<void*>(SymconTbase)},
      {"jaxk_symcon_wgrad", reinterpret_cast<void*>(SymconWgrad)},
      {"jaxk_symcon_engine", reinterpret_cast<void*>(SymconEngine)},
      {"jaxk_symjit", reinterpret_cast<void*>(SymjitLaunch)},
      {"jaxk_symjit_side_sort", reinterpret_cast<void*>(SymjitSideSort)},
  };
}

}  // namespace jaxk::mace
