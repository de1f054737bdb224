#include "bindings/module_common.h"

NB_MODULE(_mace_cuda, m) { jaxk::DefineModule(m, &jaxk::mace::Handlers); }
