// Configuration and shared-memory carve-up of the warp-specialised GNA forward kernels (one
// producer warpgroup, two wgmma consumer warpgroups, a three-stage K/V ring), for both producers:
// per-thread cp.async gathers (fwd_kernel_ws.cuh) and TMA tensor copies (fwd_kernel_tma.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "gna/fwd_layouts.cuh"
#include "gna/fwd_sync.cuh"
#include "gna/fwd_work.cuh"

namespace jaxk::gna {

// kBlockQ 128: two consumers of 64 rows; kBlockKV 128 = jax_gna.tiling.kv_block.
template <class Element_, int kHeadDim_, bool kTma_>
struct WsConfig : FwdLayouts<Element_, kHeadDim_, 128, 128, 3> {
  using Base = FwdLayouts<Element_, kHeadDim_, 128, 128, 3>;
  static constexpr bool kTma = kTma_;
  static_assert(kHeadDim_ <= 128, "head_dim 256 runs on the non-specialised kernel");
  static constexpr int kProducerThreads = 128;
  static constexpr int kConsumerThreads = 256;
  static constexpr int kThreads = kProducerThreads + kConsumerThreads;
  // A TMA producer is one thread issuing a few copies per stage; a cp.async producer computes
  // addresses for every row (more of them, smaller, at head_dim 32, where the consumers hold
  // little).
  static constexpr int kProducerRegs = kTma ? 40 : kHeadDim_ == 32 ? 96 : 56;
  static constexpr int kConsumerRegs = kTma ? 232 : kHeadDim_ == 32 ? 200 : 224;
  // setmaxnreg.inc blocks until the pool has the registers: the CTA starts with 168 per thread
  // (launch bounds), so the split must not exceed 168 * 384 in total.
  static_assert(kProducerRegs * kProducerThreads + kConsumerRegs * kConsumerThreads <=
                168 * kThreads);
  static constexpr int kChunk = 8;  // elements per 16-byte copy
  static constexpr int kChunksPerRow = kHeadDim_ / kChunk;

  static constexpr int kTileBytes =
      (Base::kSmemQ + Base::kSmemK + Base::kSmemV) * static_cast<int>(sizeof(Element_));
  // Barriers: q_full, q_empty, k_full[S], v_full[S], k_empty[S], v_empty[S].
  static constexpr int kNumBarriers = 2 + 4 * Base::kStages;
  static_assert(8 * kNumBarriers <= 128);
  // Work items of 128 bytes: the persistent TMA kernel's producer decodes tile t + 1 while the
  // consumers may still be storing tile t - 1, so three slots rotate.
  static constexpr int kWorkOffset = kTileBytes + 128;
  static constexpr int kWorkSlots = 3;
  static_assert(sizeof(WorkTile) <= 128);
  // cp.async producer: per KV-tile row, token offset from the tile's first row and packed
  // in-tile coordinates.
  static constexpr int kRowTableOffset = kWorkOffset + 128 * kWorkSlots;
  static constexpr int kRowTableBytes = kTma ? 0 : 8 * Base::kBlockKV;
  static_assert(kTileBytes % 1024 == 0 && kRowTableOffset % 8 == 0);
  // +1024: the swizzled layouts need a 1024-byte aligned base.
  static constexpr int kSmemBytes = kRowTableOffset + kRowTableBytes + 1024;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");
  // Empty barriers count consumer warps (one elected lane arrives for its warp).
  static constexpr int kConsumerWarps = kConsumerThreads / 32;
};

// Named barrier ids (0 is __syncthreads).
constexpr int kBarSchedule = 1;  // + consumer index: whose turn it is to issue GEMMs
constexpr int kBarEpilogue = 3;  // + consumer index: O staged in shared memory
constexpr int kBarQkDone = 5;    // consumer 1's Q K^T of a work item done (O staging may start)

// A position in the K/V ring: its stage and the parity of that stage's current phase. It runs on
// across the work items of a persistent CTA.
template <int kStages>
struct RingPos {
  int stage = 0;
  uint32_t phase = 0;

  __device__ __forceinline__ void Advance() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// Shared-memory pointers of one CTA: Q, the K and V rings, the barriers, and the work-item slots.
template <class Cfg>
struct WsSmem {
  using Element = typename Cfg::Element;
  char* base;
  Element* q;
  Element* k;
  Element* v;
  uint64_t* q_full;
  uint64_t* q_empty;  // the consumers' last Q K^T of a work item is done
  uint64_t* k_full;
  uint64_t* v_full;
  uint64_t* k_empty;
  uint64_t* v_empty;

  __device__ __forceinline__ explicit WsSmem(char* smem_raw) {
    // Offsetting smem_raw itself (not an integer) keeps the pointers in the shared space.
    base = smem_raw + ((1024 - (SmemAddr(smem_raw) & 1023)) & 1023);
    q = reinterpret_cast<Element*>(base);
    k = q + Cfg::kSmemQ;
    v = k + Cfg::kSmemK;
    q_full = reinterpret_cast<uint64_t*>(base + Cfg::kTileBytes);
    q_empty = q_full + 1;
    k_full = q_empty + 1;
    v_full = k_full + Cfg::kStages;
    k_empty = v_full + Cfg::kStages;
    v_empty = k_empty + Cfg::kStages;
  }

  // One thread: full barriers expect `full_count` arrivals, empty barriers one per consumer warp.
  __device__ __forceinline__ void InitBarriers(uint32_t full_count) const {
    MbarInit(q_full, full_count);
    MbarInit(q_empty, Cfg::kConsumerWarps);
    for (int s = 0; s < Cfg::kStages; ++s) {
      MbarInit(k_full + s, full_count);
      MbarInit(v_full + s, full_count);
      MbarInit(k_empty + s, Cfg::kConsumerWarps);
      MbarInit(v_empty + s, Cfg::kConsumerWarps);
    }
    MbarInitFence();
  }

  // The work item of a CTA's t-th tile.
  __device__ __forceinline__ WorkTile& Work(int t) const {
    return reinterpret_cast<WorkTile*>(base + Cfg::kWorkOffset)[t % Cfg::kWorkSlots];
  }
};

}  // namespace jaxk::gna
