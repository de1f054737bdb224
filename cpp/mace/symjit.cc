// Registry and FFI handler of the run-time specialised symmetric-contraction kernels.
#include "mace/symjit.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>

#include "common/driver_entry.h"
#include "mace/launch_report.h"
#include "mace/side_stream.h"
#include "mace/symcon_handlers.h"
#include "mace/symcon_params.h"

namespace jaxk::mace {
namespace {

namespace ffi = xla::ffi;

constexpr int kBlockThreads = 128;        // = codegen.BLOCK_THREADS
constexpr char kEntry[] = "jaxk_symjit";  // kernel symbol of every generated cubin
constexpr char kTarget[] = "jaxk_symjit";
constexpr char kSideSortTarget[] = "jaxk_symjit_side_sort";

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

ffi::Error Fail(const char* call, const std::string& what) {
  return ffi::Error::InvalidArgument(std::string(call) + ": " + what);
}

ffi::Error Internal(const char* call, const std::string& what) {
  return ffi::Error::Internal(std::string(call) + ": " + what);
}

ffi::Error CudaStatus(const char* call, const char* what, cudaError_t err) {
  if (err == cudaSuccess) return ffi::Error::Success();
  return Internal(call, std::string(what) + " failed: " + cudaGetErrorString(err));
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
ffi::Error KernelOccupancy(const char* call, uint64_t key, CUkernel kernel, int64_t smem_per_group,
                           Occupancy* out) {
  static std::mutex mu;
  static auto* cache = new std::unordered_map<uint64_t, std::unordered_map<int, Occupancy>>();
  int ordinal = 0;
  if (cudaGetDevice(&ordinal) != cudaSuccess) {
    return Internal(call, "cannot query the current device");
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
    return Internal(call, "cannot query the current device");
  }
  CUresult rc = driver.kernel_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin,
                                        kernel, device);
  if (rc != CUDA_SUCCESS) {
    return Internal(call, DriverError("shared-memory opt-in", rc));
  }
  CUfunction fn = nullptr;
  rc = driver.kernel_function(&fn, kernel);
  if (rc != CUDA_SUCCESS) {
    return Internal(call, DriverError("cuKernelGetFunction", rc));
  }
  // The occupancy query does not check the kernel's own limit (__launch_bounds__).
  int max_threads = 0;
  rc = driver.function_attribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn);
  if (rc != CUDA_SUCCESS) {
    return Internal(call, DriverError("cuFuncGetAttribute", rc));
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

// The FFI buffers of one launch of a generated kernel, by role (SymjitArgs).
struct LaunchBuffers {
  const ffi::Buffer<ffi::S32>* perm = nullptr;  // by species: the sort; else each node's species
  const ffi::Buffer<ffi::S32>* items = nullptr;
  const ffi::Buffer<ffi::S32>* nitems = nullptr;
  const ffi::AnyBuffer* nin[3] = {};
  const ffi::AnyBuffer* sin[2] = {};
  ffi::AnyBuffer* nout[2] = {};
  ffi::AnyBuffer* sout[2] = {};
  // Where set: the zeroed input that species output 0 aliases, so it is not zeroed here.
  const ffi::AnyBuffer* sout0_zeroed = nullptr;
};

// The attributes of one launch (see the jaxk_symjit binding below).
struct LaunchAttrs {
  int64_t key = 0;
  int64_t by_species = 0;
  int64_t chunk = 0;
  int64_t groups = 0;
  int64_t nodes_per_call = 1;
  int64_t smem = 0;
  ffi::Span<const int64_t> nin_widths, sin_widths, nout_widths, sout_widths;
};

// A checked launch: the species outputs to zero, then the kernel (none without nodes, channels or
// work items).
struct KernelLaunch {
  CUkernel kernel = nullptr;
  SymjitArgs args = {};
  void* zero[2] = {};
  size_t zero_bytes[2] = {};
  int num_zero = 0;
  bool has_work = false;
  unsigned grid[3] = {1, 1, 1};
  unsigned groups = 1;
  unsigned smem_bytes = 0;
  int64_t species = 0;  // S, from the species arrays
};

ffi::Error FindKernel(const char* call, int64_t key, CUkernel* kernel) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  auto it = Registry().find(static_cast<uint64_t>(key));
  if (it == Registry().end()) {
    return Fail(call, "kernel " + std::to_string(key) +
                          " is not registered in this process (trace the function again)");
  }
  *kernel = it->second;
  return ffi::Error::Success();
}

// Checks the species outputs ([S, m, C] in `dtype`) and lists those to zero before the launch:
// all but an output 0 that arrives zeroed through its aliased input.
ffi::Error CheckSpeciesOutputs(const char* call, const LaunchBuffers& b, const LaunchAttrs& a,
                               ffi::DataType dtype, int64_t s, int64_t c, KernelLaunch* plan) {
  if (b.sout0_zeroed != nullptr && a.sout_widths.size() == 0) {
    return Fail(call, "sout0_zeroed without a species output");
  }
  for (size_t i = 0; i < a.sout_widths.size(); ++i) {
    ffi::AnyBuffer* out = b.sout[i];
    if (out->element_type() != dtype || !HasShape(*out, s, a.sout_widths[i], c)) {
      return Fail(call, "species output " + std::to_string(i) + " has the wrong shape or dtype");
    }
    plan->args.sout[i] = out->untyped_data();
    if (i == 0 && b.sout0_zeroed != nullptr) {
      // XLA hands an aliased output its input's own buffer (input_output_aliases).
      if (out->size_bytes() > 0 && b.sout0_zeroed->untyped_data() != out->untyped_data()) {
        return Fail(call, "species output 0 must alias its zeroed input (input_output_aliases)");
      }
      continue;
    }
    plan->zero[plan->num_zero] = out->untyped_data();
    plan->zero_bytes[plan->num_zero++] = out->size_bytes();
  }
  return ffi::Error::Success();
}

// Checks every buffer against the program's widths; fills the pointers of `plan->args`, the
// species outputs to zero, `has_work` and `species`.
ffi::Error CheckBuffers(const char* call, const LaunchBuffers& b, const LaunchAttrs& a,
                        KernelLaunch* plan) {
  if (a.nin_widths.size() < 1 || a.nin_widths.size() > 3 || a.sin_widths.size() > 2 ||
      a.nout_widths.size() > 2 || a.sout_widths.size() > 2 || a.chunk < 0 || a.groups < 0 ||
      a.groups > kMaxGroups || a.nodes_per_call < 1 || a.smem < 0) {
    return Fail(call, "bad array counts, chunk, groups or nodes_per_call");
  }
  const ffi::DataType dtype = b.nin[0]->element_type();
  if (!FloatType(dtype)) return Fail(call, "node and species arrays must be float32 or float64");
  const auto d0 = b.nin[0]->dimensions();
  if (d0.size() != 3) return Fail(call, "node arrays must be [N, C, k]");
  const int64_t n = d0[0], c = d0[1];
  const auto id = b.items->dimensions();
  // by_species: perm / items / nitems are the species sort; else perm holds each node's
  // species and the kernel walks the nodes in their own order (items and nitems unused: any
  // int32 arrays, so the caller need not materialise placeholders).
  if (b.perm->element_count() != static_cast<size_t>(n)) return Fail(call, "perm [N] expected");
  if (a.by_species && (id.size() != 2 || id[1] != 4 || b.nitems->element_count() != 1)) {
    return Fail(call, "items [I, 4] and nitems [1] expected");
  }
  if (!a.by_species && a.sout_widths.size() > 0) {
    return Fail(call, "species outputs need the nodes sorted by species (by_species=1)");
  }
  int64_t s = -1;
  SymjitArgs& args = plan->args;
  for (size_t i = 0; i < a.nin_widths.size(); ++i) {
    if (b.nin[i]->element_type() != dtype || !HasShape(*b.nin[i], n, c, a.nin_widths[i])) {
      return Fail(call, "node array " + std::to_string(i) + " must be [N, C, " +
                            std::to_string(a.nin_widths[i]) + "] in the dtype of the first");
    }
    args.nin[i] = b.nin[i]->untyped_data();
  }
  for (size_t i = 0; i < a.sin_widths.size(); ++i) {
    if (b.sin[i]->element_type() != dtype || !HasShape(*b.sin[i], s, a.sin_widths[i], c)) {
      return Fail(call, "species array " + std::to_string(i) + " must be [S, " +
                            std::to_string(a.sin_widths[i]) + ", C] in the node dtype");
    }
    s = b.sin[i]->dimensions()[0];
    args.sin[i] = b.sin[i]->untyped_data();
  }
  plan->species = s;
  for (size_t i = 0; i < a.nout_widths.size(); ++i) {
    if (b.nout[i]->element_type() != dtype || !HasShape(*b.nout[i], n, c, a.nout_widths[i])) {
      return Fail(call, "node output " + std::to_string(i) + " has the wrong shape or dtype");
    }
    args.nout[i] = b.nout[i]->untyped_data();
  }
  const ffi::Error err = CheckSpeciesOutputs(call, b, a, dtype, s, c, plan);
  if (err.failure()) return err;
  plan->has_work = n > 0 && c > 0 && id[0] > 0;
  if (!plan->has_work) return ffi::Error::Success();
  if (n > INT32_MAX || c > INT32_MAX) return Fail(call, "N and C must fit in int32");
  args.perm = b.perm->typed_data();
  args.items = b.items->typed_data();
  args.nitems = b.nitems->typed_data();
  args.n = static_cast<int32_t>(n);
  args.c = static_cast<int32_t>(c);
  args.s = static_cast<int32_t>(s);
  return ffi::Error::Success();
}

// The launch shape of a checked launch with work (`items` rows: the grid of a by-species launch).
ffi::Error PlanGrid(const char* call, const LaunchAttrs& a, int64_t items, KernelLaunch* plan) {
  const int64_t n = plan->args.n, c = plan->args.c;
  Occupancy occ;
  const ffi::Error err =
      KernelOccupancy(call, static_cast<uint64_t>(a.key), plan->kernel, a.smem, &occ);
  if (err.failure()) return err;
  const LaunchShape shape = ChooseShape(occ, a.groups, a.chunk, n, a.nodes_per_call);
  if (shape.groups == 0) {
    return Fail(call, a.groups > 0
                          ? "groups=" + std::to_string(a.groups) + " does not fit on this GPU"
                          : "the kernel does not fit on this GPU (registers or shared memory)");
  }
  plan->args.chunk = shape.chunk;
  // by species: x = work item, y = chunk of the item (items <= 128 nodes); else x = chunk.
  const int64_t blocks = a.by_species ? items : (n + shape.chunk - 1) / shape.chunk;
  plan->grid[0] = static_cast<unsigned>(blocks);
  plan->grid[1] = a.by_species ? static_cast<unsigned>((128 + shape.chunk - 1) / shape.chunk) : 1;
  plan->grid[2] = static_cast<unsigned>((c + kBlockThreads - 1) / kBlockThreads);
  plan->groups = static_cast<unsigned>(shape.groups);
  plan->smem_bytes = static_cast<unsigned>(shape.groups * a.smem);
  return ffi::Error::Success();
}

// Checks the whole launch and fills `plan`; enqueues nothing (EnqueueLaunch does), so that a
// caller can check all its work before launching any.
ffi::Error PlanLaunch(const char* call, const LaunchBuffers& b, const LaunchAttrs& a,
                      KernelLaunch* plan) {
  ffi::Error err = FindKernel(call, a.key, &plan->kernel);
  if (err.success()) err = CheckBuffers(call, b, a, plan);
  if (err.failure() || !plan->has_work) return err;
  return PlanGrid(call, a, b.items->dimensions()[0], plan);
}

// Zeroes the planned species outputs, then launches the kernel, on `stream`.
ffi::Error EnqueueLaunch(const char* call, const KernelLaunch& plan, cudaStream_t stream) {
  for (int i = 0; i < plan.num_zero; ++i) {
    const cudaError_t err = cudaMemsetAsync(plan.zero[i], 0, plan.zero_bytes[i], stream);
    if (err != cudaSuccess) return CudaStatus(call, "zeroing a species output", err);
  }
  if (!plan.has_work) return ffi::Error::Success();
  SymjitArgs args = plan.args;
  void* params[] = {&args};
  const CUresult rc =
      GetDriver().launch(reinterpret_cast<CUfunction>(plan.kernel), plan.grid[0], plan.grid[1],
                         plan.grid[2], kBlockThreads, plan.groups, 1, plan.smem_bytes,
                         reinterpret_cast<CUstream>(stream), params, nullptr);
  if (rc != CUDA_SUCCESS) return Internal(call, DriverError("launch", rc));
  return ffi::Error::Success();
}

// The three node and two species operands of both handlers (unused ones are placeholders).
void SetNodeAndSpeciesArrays(const ffi::AnyBuffer& nin0, const ffi::AnyBuffer& nin1,
                             const ffi::AnyBuffer& nin2, const ffi::AnyBuffer& sin0,
                             const ffi::AnyBuffer& sin1, LaunchBuffers* b) {
  b->nin[0] = &nin0;
  b->nin[1] = &nin1;
  b->nin[2] = &nin2;
  b->sin[0] = &sin0;
  b->sin[1] = &sin1;
}

ffi::Error LaunchImpl(cudaStream_t stream, ffi::Buffer<ffi::S32> perm, ffi::Buffer<ffi::S32> items,
                      ffi::Buffer<ffi::S32> nitems, ffi::AnyBuffer nin0, ffi::AnyBuffer nin1,
                      ffi::AnyBuffer nin2, ffi::AnyBuffer sin0, ffi::AnyBuffer sin1,
                      ffi::AnyBuffer sout0_init, ffi::Result<ffi::AnyBuffer> nout0,
                      ffi::Result<ffi::AnyBuffer> nout1, ffi::Result<ffi::AnyBuffer> sout0,
                      ffi::Result<ffi::AnyBuffer> sout1, int64_t key, int64_t by_species,
                      int64_t sout0_zeroed, int64_t chunk, int64_t groups, int64_t nodes_per_call,
                      int64_t smem, ffi::Span<const int64_t> nin_widths,
                      ffi::Span<const int64_t> sin_widths, ffi::Span<const int64_t> nout_widths,
                      ffi::Span<const int64_t> sout_widths) {
  LaunchBuffers b;
  b.perm = &perm;
  b.items = &items;
  b.nitems = &nitems;
  SetNodeAndSpeciesArrays(nin0, nin1, nin2, sin0, sin1, &b);
  b.nout[0] = &*nout0;
  b.nout[1] = &*nout1;
  b.sout[0] = &*sout0;
  b.sout[1] = &*sout1;
  b.sout0_zeroed = sout0_zeroed ? &sout0_init : nullptr;
  const LaunchAttrs a{key,  by_species, chunk,      groups,      nodes_per_call,
                      smem, nin_widths, sin_widths, nout_widths, sout_widths};
  KernelLaunch plan;
  ffi::Error err = PlanLaunch(kTarget, b, a, &plan);
  if (err.success()) err = EnqueueLaunch(kTarget, plan, stream);
  if (err.success()) ReportLaunch(stream, kTarget);
  return err;
}

// The zeroed buffer of jaxk_symjit_side_sort: [S, k, C] in the node dtype (the backward's
// species output that will accumulate into it).
bool ZeroedShapeOk(const ffi::AnyBuffer& zeroed, const ffi::AnyBuffer& nin0, int64_t s) {
  const auto d = nin0.dimensions();
  return zeroed.element_type() == nin0.element_type() && HasShape(zeroed, s, -1, d[1]);
}

// The side stream's work: the species sort, then the zeroed buffer.
ffi::Error EnqueueSideWork(const SortParams& sort, ffi::AnyBuffer& zeroed, cudaStream_t side) {
  const ffi::Error err = CudaStatus(kSideSortTarget, "species sort", LaunchSymconSort(sort, side));
  if (err.failure()) return err;
  return CudaStatus(kSideSortTarget, "zeroing the weight-gradient buffer",
                    cudaMemsetAsync(zeroed.untyped_data(), 0, zeroed.size_bytes(), side));
}

// Fork: the side work (the sort first, so that its blocks are not queued behind the whole
// kernel) on the side stream while the kernel runs on `stream`; join.
ffi::Error ForkJoin(cudaStream_t stream, const KernelLaunch& plan, const SortParams& sort,
                    ffi::AnyBuffer& zeroed) {
  SideStream side;
  ffi::Error err = CudaStatus(kSideSortTarget, "opening the side stream", side.Open());
  if (err.success()) err = CudaStatus(kSideSortTarget, "forking", side.Fork(stream));
  if (err.failure()) return err;
  const ffi::Error side_err = EnqueueSideWork(sort, zeroed, side.stream());
  const ffi::Error main_err =
      side_err.success() ? EnqueueLaunch(kSideSortTarget, plan, stream) : ffi::Error::Success();
  // Once forked, always join: nothing after this call on XLA's stream may overlap the side work.
  const ffi::Error join_err = CudaStatus(kSideSortTarget, "joining", side.Join(stream));
  if (side_err.failure()) return side_err;
  return main_err.failure() ? main_err : join_err;
}

// A program on unsorted nodes (the forward) on XLA's stream and, concurrently on the device's side
// stream, the species sort the backward needs and a zeroed buffer for its weight gradient. Both
// are complete, in XLA's stream order, when the call returns (fork/join; see side_stream.h).
ffi::Error SideSortImpl(cudaStream_t stream, ffi::Buffer<ffi::S32> species, ffi::AnyBuffer nin0,
                        ffi::AnyBuffer nin1, ffi::AnyBuffer nin2, ffi::AnyBuffer sin0,
                        ffi::AnyBuffer sin1, ffi::Result<ffi::AnyBuffer> nout0,
                        ffi::Result<ffi::AnyBuffer> nout1, ffi::Result<ffi::Buffer<ffi::S32>> perm,
                        ffi::Result<ffi::Buffer<ffi::S32>> items,
                        ffi::Result<ffi::Buffer<ffi::S32>> nitems,
                        ffi::Result<ffi::Buffer<ffi::S32>> work, ffi::Result<ffi::AnyBuffer> zeroed,
                        int64_t key, int64_t chunk, int64_t groups, int64_t nodes_per_call,
                        int64_t smem, ffi::Span<const int64_t> nin_widths,
                        ffi::Span<const int64_t> sin_widths, ffi::Span<const int64_t> nout_widths) {
  if (sin_widths.size() < 1) return Fail(kSideSortTarget, "a species array (S) is required");
  // On unsorted nodes the kernel's perm slot carries each node's species (items, nitems unused).
  LaunchBuffers b;
  b.perm = b.items = b.nitems = &species;
  SetNodeAndSpeciesArrays(nin0, nin1, nin2, sin0, sin1, &b);
  b.nout[0] = &*nout0;
  b.nout[1] = &*nout1;
  const LaunchAttrs a{key,  0,          chunk,      groups,      nodes_per_call,
                      smem, nin_widths, sin_widths, nout_widths, {}};
  KernelLaunch plan;
  ffi::Error err = PlanLaunch(kSideSortTarget, b, a, &plan);
  if (err.failure()) return err;
  SortParams sort;
  const std::string what =
      PlanSymconSort(species, *perm, *items, *nitems, *work, plan.species, &sort);
  if (!what.empty()) return Fail(kSideSortTarget, "species sort: " + what);
  if (!ZeroedShapeOk(*zeroed, nin0, plan.species)) {
    return Fail(kSideSortTarget, "the zeroed buffer must be [S, k, C] in the node dtype");
  }
  err = ForkJoin(stream, plan, sort, *zeroed);
  if (err.success()) ReportLaunch(stream, kSideSortTarget);
  return err;
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
                                  .Arg<ffi::AnyBuffer>()  // sout0's zeros (if sout0_zeroed)
                                  .Ret<ffi::AnyBuffer>()  // node outputs
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()  // species outputs
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("key")
                                  .Attr<int64_t>("by_species")    // 0: perm = species
                                  .Attr<int64_t>("sout0_zeroed")  // 1: sout0 aliases its zeros
                                  .Attr<int64_t>("chunk")         // nodes per block, 0: auto
                                  .Attr<int64_t>("groups")        // blockDim.y, 0: auto
                                  .Attr<int64_t>("nodes_per_call")
                                  .Attr<int64_t>("smem")  // bytes per group
                                  .Attr<ffi::Span<const int64_t>>("nin_widths")
                                  .Attr<ffi::Span<const int64_t>>("sin_widths")
                                  .Attr<ffi::Span<const int64_t>>("nout_widths")
                                  .Attr<ffi::Span<const int64_t>>("sout_widths"),
                              {ffi::Traits::kCmdBufferCompatible});

// Command-buffer compatible: under XLA's graph capture the fork and join are captured as two
// branches of the graph, on the calling thread's own side stream (side_stream.h).
XLA_FFI_DEFINE_HANDLER_SYMBOL(SymjitSideSort, SideSortImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()  // species [N]
                                  .Arg<ffi::AnyBuffer>()         // node arrays
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()  // species arrays
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()  // node outputs
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>()  // perm [N]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // items [I, 4]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // nitems [1]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // work [S + 2]
                                  .Ret<ffi::AnyBuffer>()         // zeroed [S, k, C]
                                  .Attr<int64_t>("key")
                                  .Attr<int64_t>("chunk")
                                  .Attr<int64_t>("groups")
                                  .Attr<int64_t>("nodes_per_call")
                                  .Attr<int64_t>("smem")
                                  .Attr<ffi::Span<const int64_t>>("nin_widths")
                                  .Attr<ffi::Span<const int64_t>>("sin_widths")
                                  .Attr<ffi::Span<const int64_t>>("nout_widths"),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace jaxk::mace
