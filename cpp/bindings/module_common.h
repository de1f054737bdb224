// Shared body of the nanobind modules: handler capsules plus build diagnostics.
#pragma once

#include <nanobind/nanobind.h>

#include <vector>

#include "common/registry.h"
#include "xla/ffi/api/c_api.h"

namespace jaxk {

inline void DefineModule(nanobind::module_& m, std::vector<HandlerEntry> (*handlers)()) {
  namespace nb = nanobind;
  m.def("registrations", [handlers]() {
    nb::dict out;
    for (const HandlerEntry& entry : handlers()) {
      out[entry.name] = nb::capsule(entry.handler);
    }
    return out;
  });
  // The XLA FFI API version these handlers were compiled against: Python refuses to register
  // them on a runtime whose FFI API is older (that would break the whole backend).
  m.def("ffi_api_version", []() { return nb::make_tuple(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR); });
  m.attr("built_against_jaxlib") = JAXK_BUILT_JAXLIB;
}

}  // namespace jaxk
