// Run-time specialised symmetric-contraction kernels: a registry of kernels compiled by NVRTC
// from generated source (jax_mace/symmetric_contraction/codegen.py) and the XLA FFI handlers
// that launch them: "jaxk_symjit" (one kernel) and "jaxk_symjit_side_sort" (a kernel on unsorted
// nodes, with the species sort and a zeroed weight-gradient buffer on a side stream meanwhile).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "xla/ffi/api/ffi.h"

namespace jaxk::mace {

// Argument block of every generated kernel; codegen.ARGS_STRUCT declares the same struct.
struct SymjitArgs {
  const void* nin[3];  // node arrays [N, C, k]
  const void* sin[2];  // species arrays [S, k, C]
  void* nout[2];       // node outputs [N, C, m]
  void* sout[2];       // species outputs [S, m, C], zeroed before the launch (or given zeroed)
  const int32_t* perm;
  const int32_t* items;
  const int32_t* nitems;
  int32_t n;
  int32_t c;
  int32_t s;
  int32_t chunk;  // nodes per block
};

// Loads `cubin` (entry "jaxk_symjit") under `key`; a key already loaded is kept. Returns an
// empty string on success, else the reason.
std::string SymjitRegister(uint64_t key, const void* cubin, size_t size);
bool SymjitRegistered(uint64_t key);

XLA_FFI_DECLARE_HANDLER_SYMBOL(SymjitLaunch);
XLA_FFI_DECLARE_HANDLER_SYMBOL(SymjitSideSort);

}  // namespace jaxk::mace
