// The XLA FFI handler symbol of the GNA forward kernel (target "jaxk_gna_fwd").
#pragma once

#include "xla/ffi/api/ffi.h"

namespace jaxk::gna {

XLA_FFI_DECLARE_HANDLER_SYMBOL(GnaFwd);

}  // namespace jaxk::gna
