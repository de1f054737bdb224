// Host side of the TMA producer of the GNA forward kernel: decides whether a call can take it
// and builds its tensor maps. Plain C++ (no CuTe, no XLA).
#pragma once

#include <cstdint>

#include "gna/fwd_params.h"

namespace jaxk::gna {

// Fills `maps` for the call described by `p` and returns nullptr, or returns why the call runs
// the cp.async producer instead (`maps` is then unspecified).
const char* PrepareTmaMaps(const FwdParams& p, int64_t head_dim, bool bf16, FwdTmaMaps* maps);

}  // namespace jaxk::gna
