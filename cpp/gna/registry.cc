// The XLA FFI handlers of the gna kernels. Each kernel's handler file declares its symbol here.
#include "common/registry.h"

namespace jaxk::gna {

std::vector<HandlerEntry> Handlers() { return {}; }

}  // namespace jaxk::gna
