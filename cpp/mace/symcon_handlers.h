// XLA FFI handler symbols of the symmetric-contraction kernels (targets "jaxk_symcon_*").
#pragma once

#include <cstdint>
#include <string>

#include "mace/symcon_params.h"
#include "xla/ffi/api/ffi.h"

namespace jaxk::mace {

XLA_FFI_DECLARE_HANDLER_SYMBOL(SymconSort);
XLA_FFI_DECLARE_HANDLER_SYMBOL(SymconTbase);
XLA_FFI_DECLARE_HANDLER_SYMBOL(SymconWgrad);
XLA_FFI_DECLARE_HANDLER_SYMBOL(SymconEngine);

// Checks the arrays of the species counting sort (species [N] -> perm [N], items [I, 4] with
// I >= ceil(N / 128) + S + 1, nitems [1], work [>= S + 2]) and fills `p`; launches nothing.
// Returns an empty string, else what is wrong. Shared by jaxk_symcon_sort and
// jaxk_symjit_side_sort.
std::string PlanSymconSort(const xla::ffi::Buffer<xla::ffi::S32>& species,
                           const xla::ffi::Buffer<xla::ffi::S32>& perm,
                           const xla::ffi::Buffer<xla::ffi::S32>& items,
                           const xla::ffi::Buffer<xla::ffi::S32>& nitems,
                           const xla::ffi::Buffer<xla::ffi::S32>& work, int64_t num_species,
                           SortParams* p);

}  // namespace jaxk::mace
