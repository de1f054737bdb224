// The XLA FFI handlers of the gna kernels. Each kernel's handler file declares its symbol here.
#include "common/registry.h"

#include "gna/fwd_handler.h"

namespace jaxk::gna {

std::vector<HandlerEntry> Handlers() { return {{"jaxk_gna_fwd", reinterpret_cast<void*>(GnaFwd)}}; }

}  // namespace jaxk::gna
