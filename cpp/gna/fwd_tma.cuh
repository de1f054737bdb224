// TMA (bulk tensor copy engine, sm_90) helpers of the GNA forward kernel: 5-D tile loads into
// shared memory that complete on an mbarrier, and tensor-map prefetch.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gna/fwd_sync.cuh"

namespace jaxk::gna {

// Brings a tensor map (a __grid_constant__ kernel parameter) into the descriptor cache.
__device__ __forceinline__ void PrefetchTensorMap(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Copies the box of `map` starting at coordinates (c0..c4, innermost first) into shared memory
// at `smem`; out-of-bounds elements are zero-filled and the box's full size in bytes is counted
// on `bar` when it lands.
__device__ __forceinline__ void TmaLoad5d(const CUtensorMap* map, uint64_t* bar, void* smem, int c0,
                                          int c1, int c2, int c3, int c4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6, %7}], [%2];\n" ::"r"(SmemAddr(smem)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(SmemAddr(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
      "r"(c4)
      : "memory");
}

// Stores shared memory at `smem` to the box of `map` at coordinates (c0..c4); elements outside
// the tensor are not written. Completes in this thread's bulk group (BulkCommit / BulkWaitRead).
__device__ __forceinline__ void TmaStore5d(const CUtensorMap* map, const void* smem, int c0, int c1,
                                           int c2, int c3, int c4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.global.shared::cta.bulk_group [%0, {%2, %3, %4, %5, %6}], [%1];\n" ::
          "l"(reinterpret_cast<uint64_t>(map)),
      "r"(SmemAddr(smem)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
      : "memory");
}

__device__ __forceinline__ void BulkCommit() {
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}

// Blocks until this thread's committed bulk stores have read their shared memory.
__device__ __forceinline__ void BulkWaitRead() {
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}

}  // namespace jaxk::gna
