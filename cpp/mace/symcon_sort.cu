// Counting sort of nodes by species and the engine's work items (see symcon_params.h).
#include <cuda_runtime.h>

#include <cstdint>

#include "mace/symcon_params.h"

namespace jaxk::mace {
namespace {

constexpr int kScanThreads = 1024;

// Bucket of a node: its species, or ns for species outside [0, ns) (their outputs are zero).
__device__ __forceinline__ int Bucket(int s, int ns) { return (s >= 0 && s < ns) ? s : ns; }

// One block of kScanThreads: exclusive scans of node counts and item counts over the nb = ns + 1
// buckets; writes the items (species -1 for the out-of-range bucket) and turns counts[] into the
// scatter cursors (first position of each bucket in perm). counts[] was written by other blocks'
// atomics: read through L2 (__ldcg).
__device__ void ScanBuckets(int nb, int32_t* __restrict__ counts, int32_t* __restrict__ items,
                            int32_t* __restrict__ nitems) {
  const int ns = nb - 1;
  __shared__ int s_nodes[kScanThreads];
  __shared__ int s_items[kScanThreads];
  const int t = threadIdx.x;
  const int per = (nb + kScanThreads - 1) / kScanThreads;
  const int lo = min(t * per, nb), hi = min(lo + per, nb);
  int nodes = 0, its = 0;
  for (int s = lo; s < hi; ++s) {
    const int cnt = __ldcg(counts + s);
    nodes += cnt;
    its += (cnt + kSymconItemNodes - 1) / kSymconItemNodes;
  }
  s_nodes[t] = nodes;
  s_items[t] = its;
  __syncthreads();
  for (int off = 1; off < kScanThreads; off <<= 1) {
    const int a = t >= off ? s_nodes[t - off] : 0;
    const int b = t >= off ? s_items[t - off] : 0;
    __syncthreads();
    s_nodes[t] += a;
    s_items[t] += b;
    __syncthreads();
  }
  int node_base = s_nodes[t] - nodes;
  int item_base = s_items[t] - its;
  for (int s = lo; s < hi; ++s) {
    const int cnt = __ldcg(counts + s);
    for (int first = 0; first < cnt; first += kSymconItemNodes) {
      int32_t* it = items + 4 * item_base++;
      it[0] = s < ns ? s : -1;
      it[1] = node_base + first;
      it[2] = min(kSymconItemNodes, cnt - first);
      it[3] = 0;
    }
    counts[s] = node_base;
    node_base += cnt;
  }
  if (t == kScanThreads - 1) *nitems = s_items[t];
}

// counts[s] += number of nodes of species s (warp-aggregated atomics); the last block to finish
// (ticket counts[ns + 1]) then scans them (ScanBuckets), so the sort needs no separate scan
// launch. Blocks of kScanThreads threads.
__global__ void __launch_bounds__(kScanThreads)
    HistScanKernel(const int32_t* __restrict__ species, int n, int ns, int32_t* __restrict__ counts,
                   int32_t* __restrict__ items, int32_t* __restrict__ nitems) {
  const int stride = gridDim.x * blockDim.x;
  for (int first = blockIdx.x * blockDim.x; first < n; first += stride) {  // warp-uniform trips
    const int i = first + threadIdx.x;
    const int s = i < n ? Bucket(species[i], ns) : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, s);
    if (s >= 0 && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&counts[s], __popc(peers));
  }
  __shared__ bool last;
  __threadfence();  // every thread's counts are visible device-wide before the block's ticket
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&counts[ns + 1], 1) == static_cast<int>(gridDim.x) - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  ScanBuckets(ns + 1, counts, items, nitems);
}

// perm[cursor[b]++] = i for every node i of bucket b (warp-aggregated).
__global__ void ScatterKernel(const int32_t* __restrict__ species, int n, int ns,
                              int32_t* __restrict__ cursor, int32_t* __restrict__ perm) {
  const int stride = gridDim.x * blockDim.x;
  const int lane = threadIdx.x & 31;
  for (int first = blockIdx.x * blockDim.x; first < n; first += stride) {  // warp-uniform trips
    const int i = first + threadIdx.x;
    const int s = i < n ? Bucket(species[i], ns) : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, s);
    const int leader = __ffs(peers) - 1;
    int base = 0;
    if (s >= 0 && lane == leader) base = atomicAdd(&cursor[s], __popc(peers));
    base = __shfl_sync(0xffffffffu, base, leader);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (s >= 0) perm[base + rank] = i;
  }
}

}  // namespace

cudaError_t LaunchSymconSort(const SortParams& p, cudaStream_t stream) {
  // work = counts [ns + 1] and the last-block ticket.
  cudaError_t err = cudaMemsetAsync(p.work, 0, sizeof(int32_t) * (p.ns + 2), stream);
  if (err != cudaSuccess) return err;
  if (p.n == 0) return cudaMemsetAsync(p.nitems, 0, sizeof(int32_t), stream);
  const int scan_blocks = min((p.n + kScanThreads - 1) / kScanThreads, 256);
  HistScanKernel<<<scan_blocks, kScanThreads, 0, stream>>>(p.species, p.n, p.ns, p.work, p.items,
                                                           p.nitems);
  const int blocks = min((p.n + 255) / 256, 1024);
  ScatterKernel<<<blocks, 256, 0, stream>>>(p.species, p.n, p.ns, p.work, p.perm);
  return cudaGetLastError();
}

}  // namespace jaxk::mace
