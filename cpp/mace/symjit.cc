// Registry and FFI handler of the run-time specialised symmetric-contraction kernels.
#include "mace/symjit.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>

#include "common/driver_entry.h"

namespace jaxk::mace {
namespace {

namespace ffi = xla::ffi;

constexpr int kBlockThreads = 128;  // = codegen.BLOCK_THREADS
constexpr char kEntry[] = "jaxk_symjit";

std::mutex& RegistryMutex() {
  static std::mutex mu;
  return mu;
}

// Context-independent kernels (cuLibrary*), loaded into each context on first launch.
std::unordered_map<uint64_t, CUkernel>& Registry() {
  static auto* kernels = new std::unordered_map<uint64_t, CUkernel>();
  return *kernels;
}

// Driver entry points, fetched through the runtime so the module does not link libcuda.
struct Driver {
  decltype(&cuInit) init = nullptr;
  decltype(&cuGetErrorName) error_name = nullptr;
  decltype(&cuLibraryLoadData) library_load = nullptr;
  decltype(&cuLibraryUnload) library_unload = nullptr;
  decltype(&cuLibraryGetKernel) library_kernel = nullptr;
  decltype(&cuLaunchKernel) launch = nullptr;
  decltype(&cuKernelSetAttribute) kernel_attribute = nullptr;
  decltype(&cuDeviceGet) device_get = nullptr;
  decltype(&cuKernelGetFunction) kernel_function = nullptr;
  decltype(&cuOccupancyMaxActiveBlocksPerMultiprocessor) occupancy = nullptr;
  decltype(&cuFuncGetAttribute) function_attribute = nullptr;
  std::string error;
};

template <class Fn>
bool Entry(const char* symbol, Fn* fn, std::string* error) {
  if (DriverEntry(symbol, fn)) return true;
  *error = std::string("driver entry point ") + symbol + " not found";
  return false;
}

const Driver& GetDriver() {
  static const Driver* driver = [] {
    auto* d = new Driver();
    std::string* e = &d->error;
    (void)(Entry("cuInit", &d->init, e) && Entry("cuGetErrorName", &d->error_name, e) &&
           Entry("cuLibraryLoadData", &d->library_load, e) &&
           Entry("cuLibraryUnload", &d->library_unload, e) &&
           Entry("cuLibraryGetKernel", &d->library_kernel, e) &&
           Entry("cuLaunchKernel", &d->launch, e) &&
           Entry("cuKernelSetAttribute", &d->kernel_attribute, e) &&
           Entry("cuDeviceGet", &d->device_get, e) &&
           Entry("cuKernelGetFunction", &d->kernel_function, e) &&
           Entry("cuOccupancyMaxActiveBlocksPerMultiprocessor", &d->occupancy, e) &&
           Entry("cuFuncGetAttribute", &d->function_attribute, e));
    return d;
  }();
  return *driver;
}

std::string DriverError(const char* what, CUresult rc) {
  const char* name = nullptr;
  GetDriver().error_name(rc, &name);
  return std::string(what) + " failed: " + (name ? name : "unknown CUDA driver error");
}

ffi::Error Fail(const std::string& what) {
  return ffi::Error::InvalidArgument("jaxk_symjit: " + what);
}

bool FloatType(ffi::DataType t) { return t == ffi::DataType::F32 || t == ffi::DataType::F64; }

// Checks `b` is [d0, d1, d2] (a negative entry matches anything).
bool HasShape(const ffi::AnyBuffer& b, int64_t d0, int64_t d1, int64_t d2) {
  const auto d = b.dimensions();
  return d.size() == 3 && (d0 < 0 || d[0] == d0) && (d1 < 0 || d[1] == d1) &&
         (d2 < 0 || d[2] == d2);
}

constexpr int kMaxGroups = 8;  // blockDim.y: 128-channel groups per block

// Resident blocks per multiprocessor of one kernel for 1..kMaxGroups groups (0: does not fit).
struct Occupancy {
  int sms = 0;
  int blocks[kMaxGroups + 1] = {};
};

// Queried once per (kernel, device); also opts the kernel in to all shared memory it may use.
ffi::Error KernelOccupancy(uint64_t key, CUkernel kernel, int64_t smem_per_group, Occupancy* out) {
  static std::mutex mu;
  static auto* cache = new std::unordered_map<uint64_t, std::unordered_map<int, Occupancy>>();
  int ordinal = 0;
  if (cudaGetDevice(&ordinal) != cudaSuccess) {
    return ffi::Error::Internal("jaxk_symjit: cannot query the current device");
  }
  std::lock_guard<std::mutex> lock(mu);
  auto& per_device = (*cache)[key];
  auto it = per_device.find(ordinal);
  if (it != per_device.end()) {
    *out = it->second;
    return ffi::Error::Success();
  }
  const Driver& driver = GetDriver();
  Occupancy occ;
  int optin = 0;
  CUdevice device;
  if (cudaDeviceGetAttribute(&occ.sms, cudaDevAttrMultiProcessorCount, ordinal) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ordinal) !=
          cudaSuccess ||
      driver.device_get(&device, ordinal) != CUDA_SUCCESS) {
    return ffi::Error::Internal("jaxk_symjit: cannot query the current device");
  }
  CUresult rc = driver.kernel_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin,
                                        kernel, device);
  if (rc != CUDA_SUCCESS) {
    return ffi::Error::Internal("jaxk_symjit: " + DriverError("shared-memory opt-in", rc));
  }
  CUfunction fn = nullptr;
  rc = driver.kernel_function(&fn, kernel);
  if (rc != CUDA_SUCCESS) {
    return ffi::Error::Internal("jaxk_symjit: " + DriverError("cuKernelGetFunction", rc));
  }
  // The occupancy query does not check the kernel's own limit (__launch_bounds__).
  int max_threads = 0;
  rc = driver.function_attribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn);
  if (rc != CUDA_SUCCESS) {
    return ffi::Error::Internal("jaxk_symjit: " + DriverError("cuFuncGetAttribute", rc));
  }
  for (int g = 1; g <= kMaxGroups; ++g) {
    const int64_t bytes = g * smem_per_group;
    int blocks = 0;
    const bool fits = g * kBlockThreads <= max_threads && bytes <= optin &&
                      driver.occupancy(&blocks, fn, g * kBlockThreads,
                                       static_cast<size_t>(bytes)) == CUDA_SUCCESS;
    occ.blocks[g] = fits ? blocks : 0;
  }
  per_device[ordinal] = occ;
  *out = occ;
  return ffi::Error::Success();
}

// Groups per block (most resident warps; fewer, larger blocks on a tie) and nodes per block
// (at least two loop steps, else about eight waves of blocks, so the last wave's idle tail
// stays small; measured on H100: smaller chunks won below 50k nodes).
struct LaunchShape {
  int groups = 0;
  int chunk = 0;
};

LaunchShape ChooseShape(const Occupancy& occ, int64_t groups, int64_t chunk, int64_t nodes,
                        int64_t nodes_per_call) {
  LaunchShape shape;
  if (groups > 0) {
    shape.groups = groups <= kMaxGroups && occ.blocks[groups] > 0 ? static_cast<int>(groups) : 0;
  } else {
    for (int g = 1; g <= kMaxGroups; ++g) {
      if (occ.blocks[g] * g >= occ.blocks[shape.groups] * shape.groups && occ.blocks[g] > 0) {
        shape.groups = g;
      }
    }
  }
  if (shape.groups == 0) return shape;
  if (chunk > 0) {
    shape.chunk = static_cast<int>(chunk);
    return shape;
  }
  const int64_t step = shape.groups * nodes_per_call;
  const int64_t resident = static_cast<int64_t>(occ.sms) * occ.blocks[shape.groups];
  const int64_t max_steps = std::max<int64_t>(1, 128 / step);
  const int64_t steps = std::clamp<int64_t>(nodes / (8 * resident * step), 2, max_steps);
  shape.chunk = static_cast<int>(steps * step);
  return shape;
}

ffi::Error LaunchImpl(cudaStream_t stream, ffi::Buffer<ffi::S32> perm, ffi::Buffer<ffi::S32> items,
                      ffi::Buffer<ffi::S32> nitems, ffi::AnyBuffer nin0, ffi::AnyBuffer nin1,
                      ffi::AnyBuffer nin2, ffi::AnyBuffer sin0, ffi::AnyBuffer sin1,
                      ffi::Result<ffi::AnyBuffer> nout0, ffi::Result<ffi::AnyBuffer> nout1,
                      ffi::Result<ffi::AnyBuffer> sout0, ffi::Result<ffi::AnyBuffer> sout1,
                      int64_t key, int64_t by_species, int64_t chunk, int64_t groups,
                      int64_t nodes_per_call, int64_t smem, ffi::Span<const int64_t> nin_widths,
                      ffi::Span<const int64_t> sin_widths, ffi::Span<const int64_t> nout_widths,
                      ffi::Span<const int64_t> sout_widths) {
  CUkernel kernel = nullptr;
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    auto it = Registry().find(static_cast<uint64_t>(key));
    if (it == Registry().end()) {
      return Fail("kernel " + std::to_string(key) +
                  " is not registered in this process (trace the function again)");
    }
    kernel = it->second;
  }
  const ffi::AnyBuffer* nin[3] = {&nin0, &nin1, &nin2};
  const ffi::AnyBuffer* sin[2] = {&sin0, &sin1};
  ffi::AnyBuffer* nout[2] = {&*nout0, &*nout1};
  ffi::AnyBuffer* sout[2] = {&*sout0, &*sout1};
  if (nin_widths.size() < 1 || nin_widths.size() > 3 || sin_widths.size() > 2 ||
      nout_widths.size() > 2 || sout_widths.size() > 2 || chunk < 0 || groups < 0 ||
      groups > kMaxGroups || nodes_per_call < 1 || smem < 0) {
    return Fail("bad array counts, chunk, groups or nodes_per_call");
  }
  const ffi::DataType dtype = nin0.element_type();
  if (!FloatType(dtype)) return Fail("node and species arrays must be float32 or float64");
  const auto d0 = nin0.dimensions();
  if (d0.size() != 3) return Fail("node arrays must be [N, C, k]");
  const int64_t n = d0[0], c = d0[1];
  const auto id = items.dimensions();
  // by_species: perm / items / nitems are the species sort; else perm holds each node's
  // species and the kernel walks the nodes in their own order (items and nitems unused: any
  // int32 arrays, so the caller need not materialise placeholders).
  if (perm.element_count() != static_cast<size_t>(n)) return Fail("perm [N] expected");
  if (by_species && (id.size() != 2 || id[1] != 4 || nitems.element_count() != 1)) {
    return Fail("items [I, 4] and nitems [1] expected");
  }
  if (!by_species && sout_widths.size() > 0) {
    return Fail("species outputs need the nodes sorted by species (by_species=1)");
  }
  int64_t s = -1;
  SymjitArgs args = {};
  for (size_t i = 0; i < nin_widths.size(); ++i) {
    if (nin[i]->element_type() != dtype || !HasShape(*nin[i], n, c, nin_widths[i])) {
      return Fail("node array " + std::to_string(i) + " must be [N, C, " +
                  std::to_string(nin_widths[i]) + "] in the dtype of the first");
    }
    args.nin[i] = nin[i]->untyped_data();
  }
  for (size_t i = 0; i < sin_widths.size(); ++i) {
    if (sin[i]->element_type() != dtype || !HasShape(*sin[i], s, sin_widths[i], c)) {
      return Fail("species array " + std::to_string(i) + " must be [S, " +
                  std::to_string(sin_widths[i]) + ", C] in the node dtype");
    }
    s = sin[i]->dimensions()[0];
    args.sin[i] = sin[i]->untyped_data();
  }
  for (size_t i = 0; i < nout_widths.size(); ++i) {
    if (nout[i]->element_type() != dtype || !HasShape(*nout[i], n, c, nout_widths[i])) {
      return Fail("node output " + std::to_string(i) + " has the wrong shape or dtype");
    }
    args.nout[i] = nout[i]->untyped_data();
  }
  for (size_t i = 0; i < sout_widths.size(); ++i) {
    if (sout[i]->element_type() != dtype || !HasShape(*sout[i], s, sout_widths[i], c)) {
      return Fail("species output " + std::to_string(i) + " has the wrong shape or dtype");
    }
    args.sout[i] = sout[i]->untyped_data();
    const cudaError_t err = cudaMemsetAsync(args.sout[i], 0, sout[i]->size_bytes(), stream);
    if (err != cudaSuccess) {
      return ffi::Error::Internal(std::string("jaxk_symjit: ") + cudaGetErrorString(err));
    }
  }
  if (n == 0 || c == 0 || id[0] == 0) return ffi::Error::Success();
  if (n > INT32_MAX || c > INT32_MAX) return Fail("N and C must fit in int32");
  args.perm = perm.typed_data();
  args.items = items.typed_data();
  args.nitems = nitems.typed_data();
  args.n = static_cast<int32_t>(n);
  args.c = static_cast<int32_t>(c);
  args.s = static_cast<int32_t>(s);
  Occupancy occ;
  ffi::Error err = KernelOccupancy(static_cast<uint64_t>(key), kernel, smem, &occ);
  if (err.failure()) return err;
  const LaunchShape shape = ChooseShape(occ, groups, chunk, n, nodes_per_call);
  if (shape.groups == 0) {
    return Fail(groups > 0 ? "groups=" + std::to_string(groups) + " does not fit on this GPU"
                           : "the kernel does not fit on this GPU (registers or shared memory)");
  }
  args.chunk = shape.chunk;
  // by species: x = work item, y = chunk of the item (items <= 128 nodes); else x = chunk.
  const int64_t gx = by_species ? id[0] : (n + shape.chunk - 1) / shape.chunk;
  const unsigned gy = by_species ? static_cast<unsigned>((128 + shape.chunk - 1) / shape.chunk) : 1;
  const unsigned gz = static_cast<unsigned>((c + kBlockThreads - 1) / kBlockThreads);
  const Driver& driver = GetDriver();
  void* params[] = {&args};
  const CUresult rc = driver.launch(reinterpret_cast<CUfunction>(kernel), static_cast<unsigned>(gx),
                                    gy, gz, kBlockThreads, static_cast<unsigned>(shape.groups), 1,
                                    static_cast<unsigned>(shape.groups * smem),
                                    reinterpret_cast<CUstream>(stream), params, nullptr);
  if (rc != CUDA_SUCCESS) return ffi::Error::Internal("jaxk_symjit: " + DriverError("launch", rc));
  return ffi::Error::Success();
}

}  // namespace

std::string SymjitRegister(uint64_t key, const void* cubin, size_t size) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  if (Registry().count(key)) return "";
  if (size == 0) return "empty cubin";
  const Driver& driver = GetDriver();
  if (!driver.error.empty()) return driver.error;
  CUresult rc = driver.init(0);
  if (rc != CUDA_SUCCESS) return DriverError("cuInit", rc);
  CUlibrary library = nullptr;
  rc = driver.library_load(&library, cubin, nullptr, nullptr, 0, nullptr, nullptr, 0);
  if (rc != CUDA_SUCCESS) return DriverError("cuLibraryLoadData", rc);
  CUkernel kernel = nullptr;
  rc = driver.library_kernel(&kernel, library, kEntry);
  if (rc != CUDA_SUCCESS) {
    driver.library_unload(library);
    return DriverError("cuLibraryGetKernel", rc);
  }
  Registry()[key] = kernel;  // libraries stay loaded for the life of the process
  return "";
}

bool SymjitRegistered(uint64_t key) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  return Registry().count(key) > 0;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SymjitLaunch, LaunchImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()  // perm [N]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // items [I, 4]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // nitems [1]
                                  .Arg<ffi::AnyBuffer>()         // node arrays
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()  // species arrays
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()  // node outputs
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()  // species outputs
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("key")
                                  .Attr<int64_t>("by_species")  // 0: perm = species
                                  .Attr<int64_t>("chunk")       // nodes per block, 0: auto
                                  .Attr<int64_t>("groups")      // blockDim.y, 0: auto
                                  .Attr<int64_t>("nodes_per_call")
                                  .Attr<int64_t>("smem")  // bytes per group
                                  .Attr<ffi::Span<const int64_t>>("nin_widths")
                                  .Attr<ffi::Span<const int64_t>>("sin_widths")
                                  .Attr<ffi::Span<const int64_t>>("nout_widths")
                                  .Attr<ffi::Span<const int64_t>>("sout_widths"));

}  // namespace jaxk::mace
