// The XLA FFI handlers of the mace kernels. Each kernel's handler file declares its symbol here.
#include "common/registry.h"

namespace jaxk::mace {

std::vector<HandlerEntry> Handlers() { return {}; }

}  // namespace jaxk::mace
