#include <nanobind/nanobind.h>

#include <cstdint>
#include <string>

#include "bindings/module_common.h"
#include "mace/symjit.h"

NB_MODULE(_mace_cuda, m) {
  namespace nb = nanobind;
  jaxk::DefineModule(m, &jaxk::mace::Handlers);
  // Loads an NVRTC-compiled specialised kernel under `key` (see jax_mace/.../jit.py).
  m.def("symjit_register", [](uint64_t key, nb::bytes cubin) {
    const std::string err = jaxk::mace::SymjitRegister(key, cubin.c_str(), cubin.size());
    if (!err.empty()) throw std::runtime_error("symjit_register: " + err);
  });
  m.def("symjit_registered", [](uint64_t key) { return jaxk::mace::SymjitRegistered(key); });
}
