#include "bindings/module_common.h"

NB_MODULE(_gna_cuda, m) { jaxk::DefineModule(m, &jaxk::gna::Handlers); }
