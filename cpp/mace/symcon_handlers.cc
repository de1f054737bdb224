// XLA FFI handlers of the symmetric-contraction kernels: shape/dtype checks, parameter packing,
// launch. Python side: jax_mace/symmetric_contraction/cuda.py.
#include "mace/symcon_handlers.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "mace/launch_report.h"
#include "mace/symcon_params.h"
#include "xla/ffi/api/ffi.h"

namespace jaxk::mace {
namespace {

namespace ffi = xla::ffi;

using I32 = ffi::Buffer<ffi::S32>;
using I32Result = ffi::Result<ffi::Buffer<ffi::S32>>;

ffi::Error Fail(const char* op, const std::string& what) {
  return ffi::Error::InvalidArgument(std::string("jaxk_symcon_") + op + ": " + what);
}

ffi::Error CudaStatus(const char* op, cudaError_t err) {
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("jaxk_symcon_") + op +
                              ": CUDA error: " + cudaGetErrorString(err));
}

// The status of a launch on `stream` (reported under JAX_MACE_DEBUG=1 when it succeeded).
ffi::Error Launched(const char* op, cudaStream_t stream, cudaError_t err) {
  if (err == cudaSuccess) ReportLaunch(stream, "jaxk_symcon_", op);
  return CudaStatus(op, err);
}

bool FloatDtype(ffi::DataType t, SymconDtype* out) {
  if (t == ffi::DataType::F32) {
    *out = SymconDtype::kF32;
    return true;
  }
  if (t == ffi::DataType::F64) {
    *out = SymconDtype::kF64;
    return true;
  }
  return false;
}

bool Dims(const ffi::AnyBuffer& b, std::initializer_list<int64_t> want) {
  const auto d = b.dimensions();
  if (d.size() != want.size()) return false;
  size_t i = 0;
  for (int64_t w : want) {
    if (w >= 0 && d[i] != w) return false;
    ++i;
  }
  return true;
}

// ---- sort -------------------------------------------------------------------------------------

ffi::Error SortImpl(cudaStream_t stream, I32 species, I32Result perm, I32Result items,
                    I32Result nitems, I32Result work, int64_t num_species) {
  SortParams p;
  const std::string what = PlanSymconSort(species, *perm, *items, *nitems, *work, num_species, &p);
  if (!what.empty()) return Fail("sort", what);
  return Launched("sort", stream, LaunchSymconSort(p, stream));
}

// ---- tbase / wgrad ------------------------------------------------------------------------------

// tbase: in = W [S, W, C] -> out = T [S, C, D]; wgrad: in = Z [S, C, D] -> out = gW [S, W, C].
ffi::Error LinearImpl(const char* op, bool transpose, cudaStream_t stream, ffi::AnyBuffer in,
                      I32 tb_start, I32 tb_w, ffi::AnyBuffer tb_coeff,
                      ffi::Result<ffi::AnyBuffer> out) {
  TbaseParams p;
  if (!FloatDtype(in.element_type(), &p.dtype) || tb_coeff.element_type() != in.element_type() ||
      out->element_type() != in.element_type()) {
    return Fail(op, "in, tb_coeff and out must share a float32/float64 dtype");
  }
  const auto id = in.dimensions();
  const auto od = out->dimensions();
  if (id.size() != 3 || od.size() != 3) return Fail(op, "in and out must be rank 3");
  p.ns = static_cast<int>(id[0]);
  p.d = static_cast<int>(tb_start.element_count()) - 1;
  if (!transpose) {
    p.nw = static_cast<int>(id[1]);
    p.nc = static_cast<int>(id[2]);
    if (!Dims(*out, {p.ns, p.nc, p.d})) return Fail(op, "out must be [S, C, D]");
  } else {
    p.nc = static_cast<int>(id[1]);
    p.nw = static_cast<int>(od[1]);
    if (id[2] != p.d || !Dims(*out, {p.ns, -1, p.nc})) return Fail(op, "in [S,C,D] -> out [S,W,C]");
  }
  if (p.d < 0 || tb_w.element_count() != tb_coeff.element_count()) {
    return Fail(op, "bad term -> path CSR");
  }
  p.in = in.untyped_data();
  p.tb_start = tb_start.typed_data();
  p.tb_w = tb_w.typed_data();
  p.tb_coeff = tb_coeff.untyped_data();
  p.out = out->untyped_data();
  return Launched(op, stream,
                  transpose ? LaunchSymconWgrad(p, stream) : LaunchSymconTbase(p, stream));
}

ffi::Error TbaseImpl(cudaStream_t stream, ffi::AnyBuffer w, I32 tb_start, I32 tb_w,
                     ffi::AnyBuffer tb_coeff, ffi::Result<ffi::AnyBuffer> out) {
  return LinearImpl("tbase", false, stream, w, tb_start, tb_w, tb_coeff, out);
}

ffi::Error WgradImpl(cudaStream_t stream, ffi::AnyBuffer z, I32 tb_start, I32 tb_w,
                     ffi::AnyBuffer tb_coeff, ffi::Result<ffi::AnyBuffer> out) {
  return LinearImpl("wgrad", true, stream, z, tb_start, tb_w, tb_coeff, out);
}

// ---- engine ------------------------------------------------------------------------------------

ffi::Error EngineImpl(cudaStream_t stream, ffi::AnyBuffer op0, ffi::AnyBuffer op1,
                      ffi::AnyBuffer op2, ffi::AnyBuffer t0, ffi::AnyBuffer t1, I32 perm, I32 items,
                      I32 nitems, I32 prog, ffi::AnyBuffer progf, ffi::Result<ffi::AnyBuffer> out,
                      ffi::Result<ffi::AnyBuffer> z, int64_t nops, int64_t mout, int64_t mreal,
                      int64_t nv, int64_t kinds, int64_t nrec, int64_t ngroups, int64_t carry,
                      int64_t nterms, int64_t off_glist, int64_t off_yslot, int64_t off_qpack,
                      int64_t off_tj, int64_t off_cj, ffi::Span<const int32_t> smap) {
  SymconDtype dtype;
  const ffi::DataType ft = op0.element_type();
  if (!FloatDtype(ft, &dtype)) return Fail("engine", "operands must be float32 or float64");
  for (const ffi::AnyBuffer* b : {&op1, &op2, &t0, &t1, &progf}) {
    if (b->element_type() != ft) return Fail("engine", "all float buffers must share a dtype");
  }
  if (out->element_type() != ft || z->element_type() != ft) {
    return Fail("engine", "outputs must have the operand dtype");
  }
  if (!(nops == 1 && !carry) && !(nops == 2) && !(nops == 3 && carry)) {
    return Fail("engine", "unsupported (nops, carry) combination");
  }
  if (mout < 1 || mout > kSymconNReg || mreal < 1 || mreal > mout || nv < 0 ||
      nv >= kSymconMaxSlots || nrec < 0 || nrec >= kSymconMaxRecords || kinds < 0 || kinds >= 64 ||
      smap.size() != static_cast<size_t>(kSymconKinds * kSymconMapSize)) {
    return Fail("engine", "program attributes out of range");
  }
  const auto d0 = op0.dimensions();
  if (d0.size() != 3) return Fail("engine", "operands must be [N, C, K]");
  const int64_t n = d0[0], nc = d0[1];
  const ffi::AnyBuffer* ops[3] = {&op0, &op1, &op2};
  EngineParams p;
  for (int i = 0; i < 3; ++i) {
    const auto di = ops[i]->dimensions();
    if (di.size() != 3 || di[0] != n || di[1] != nc || di[2] < 1 || di[2] > kSymconOne) {
      return Fail("engine", "operands must be [N, C, K] with the same N, C and 1 <= K <= 16");
    }
    p.op[i] = ops[i]->untyped_data();
    p.k[i] = static_cast<int>(di[2]);
  }
  const auto td = t0.dimensions();
  if (td.size() != 3 || td[1] != nc || td[2] != nterms || !Dims(t1, {td[0], nc, nterms})) {
    return Fail("engine", "t0 and t1 must be [S, C, D]");
  }
  const int64_t ns = td[0];
  const auto id = items.dimensions();
  if (perm.element_count() != static_cast<size_t>(n) || id.size() != 2 || id[1] != 4 ||
      nitems.element_count() != 1) {
    return Fail("engine", "perm [N], items [I, 4], nitems [1] expected");
  }
  const int64_t psize = static_cast<int64_t>(prog.element_count());
  if (ngroups < 0 || off_glist + 4 * ngroups > psize || off_yslot + mout > psize ||
      off_qpack + nrec > psize || off_tj + 3 * nrec > psize || off_cj + 3 * nrec > psize ||
      progf.element_count() != static_cast<size_t>(6 * nrec)) {
    return Fail("engine", "program buffers too small for their offsets");
  }
  if (!Dims(*out, {n, nc, mreal})) return Fail("engine", "out must be [N, C, mreal]");
  if (carry && !Dims(*z, {ns, nc, nterms})) return Fail("engine", "z must be [S, C, D]");
  p.t0 = t0.untyped_data();
  p.t1 = t1.untyped_data();
  p.perm = perm.typed_data();
  p.items = items.typed_data();
  p.nitems = nitems.typed_data();
  p.prog = prog.typed_data();
  p.progf = progf.untyped_data();
  p.out = out->untyped_data();
  p.z = z->untyped_data();
  p.n = static_cast<int>(n);
  p.nc = static_cast<int>(nc);
  p.ns = static_cast<int>(ns);
  p.d = static_cast<int>(nterms);
  p.max_items = static_cast<int>(id[0]);
  p.nops = static_cast<int>(nops);
  p.mout = static_cast<int>(mout);
  p.mreal = static_cast<int>(mreal);
  p.nv = static_cast<int>(nv);
  p.kinds = static_cast<int>(kinds);
  p.nrec = static_cast<int>(nrec);
  p.carry = static_cast<int>(carry);
  p.ngroups = static_cast<int>(ngroups);
  p.off_glist = static_cast<int>(off_glist);
  p.off_yslot = static_cast<int>(off_yslot);
  p.off_qpack = static_cast<int>(off_qpack);
  p.off_tj = static_cast<int>(off_tj);
  p.off_cj = static_cast<int>(off_cj);
  for (size_t i = 0; i < smap.size(); ++i) {
    const int32_t v = smap[i];
    if (v != 0xFFFF && (v < 0 || v >= nv)) return Fail("engine", "smap slot out of range");
    p.smap[i] = static_cast<uint16_t>(v);
  }
  const cudaError_t err = LaunchSymconEngine(dtype, p, stream);
  if (err == cudaErrorInvalidConfiguration) {
    return Fail("engine", "program too large for shared memory even with one warp per block");
  }
  return Launched("engine", stream, err);
}

}  // namespace

std::string PlanSymconSort(const I32& species, const I32& perm, const I32& items, const I32& nitems,
                           const I32& work, int64_t num_species, SortParams* p) {
  const int64_t n = static_cast<int64_t>(species.element_count());
  const auto id = items.dimensions();
  if (num_species < 1) return "num_species must be >= 1";
  if (perm.element_count() != static_cast<size_t>(n) || id.size() != 2 || id[1] != 4 ||
      nitems.element_count() != 1 || work.element_count() < static_cast<size_t>(num_species + 2)) {
    return "bad output shapes";
  }
  const int64_t need = (n + kSymconItemNodes - 1) / kSymconItemNodes + num_species + 1;
  if (id[0] < need) return "items must have ceil(N/128) + S + 1 rows";
  p->n = static_cast<int>(n);
  p->ns = static_cast<int>(num_species);
  p->max_items = static_cast<int>(id[0]);
  p->species = species.typed_data();
  p->perm = perm.typed_data();
  p->items = items.typed_data();
  p->nitems = nitems.typed_data();
  p->work = work.typed_data();
  return "";
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SymconSort, SortImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<I32>()  // species [N]
                                  .Ret<I32>()  // perm [N]
                                  .Ret<I32>()  // items [I, 4]
                                  .Ret<I32>()  // nitems [1]
                                  .Ret<I32>()  // work [S]
                                  .Attr<int64_t>("num_species"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(SymconTbase, TbaseImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()   // W [S, W, C]
                                  .Arg<I32>()              // tb_start [D + 1]
                                  .Arg<I32>()              // tb_w [P]
                                  .Arg<ffi::AnyBuffer>()   // tb_coeff [P]
                                  .Ret<ffi::AnyBuffer>(),  // T [S, C, D]
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(SymconWgrad, WgradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()   // Z [S, C, D]
                                  .Arg<I32>()              // tb_start [D + 1]
                                  .Arg<I32>()              // tb_w [P]
                                  .Arg<ffi::AnyBuffer>()   // tb_coeff [P]
                                  .Ret<ffi::AnyBuffer>(),  // gW [S, W, C]
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(SymconEngine, EngineImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // op0 [N, C, K0]
                                  .Arg<ffi::AnyBuffer>()  // op1
                                  .Arg<ffi::AnyBuffer>()  // op2
                                  .Arg<ffi::AnyBuffer>()  // t0 [S, C, D]
                                  .Arg<ffi::AnyBuffer>()  // t1 [S, C, D]
                                  .Arg<I32>()             // perm
                                  .Arg<I32>()             // items
                                  .Arg<I32>()             // nitems
                                  .Arg<I32>()             // packed program
                                  .Arg<ffi::AnyBuffer>()  // program floats
                                  .Ret<ffi::AnyBuffer>()  // out [N, C, mreal]
                                  .Ret<ffi::AnyBuffer>()  // z [S, C, D] (or [1])
                                  .Attr<int64_t>("nops")
                                  .Attr<int64_t>("mout")
                                  .Attr<int64_t>("mreal")
                                  .Attr<int64_t>("nv")
                                  .Attr<int64_t>("kinds")
                                  .Attr<int64_t>("nrec")
                                  .Attr<int64_t>("ngroups")
                                  .Attr<int64_t>("carry")
                                  .Attr<int64_t>("nterms")
                                  .Attr<int64_t>("off_glist")
                                  .Attr<int64_t>("off_yslot")
                                  .Attr<int64_t>("off_qpack")
                                  .Attr<int64_t>("off_tj")
                                  .Attr<int64_t>("off_cj")
                                  .Attr<ffi::Span<const int32_t>>("smap"),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace jaxk::mace
