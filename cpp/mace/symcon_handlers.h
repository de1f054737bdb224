// XLA FFI handler symbols of the symmetric-contraction kernels (targets "jaxk_symcon_*").
#pragma once

#include "xla/ffi/api/ffi.h"

namespace jaxk::mace {

XLA_FFI_DECLARE_HANDLER_SYMBOL(SymconSort);
XLA_FFI_DECLARE_HANDLER_SYMBOL(SymconTbase);
XLA_FFI_DECLARE_HANDLER_SYMBOL(SymconWgrad);
XLA_FFI_DECLARE_HANDLER_SYMBOL(SymconEngine);

}  // namespace jaxk::mace
