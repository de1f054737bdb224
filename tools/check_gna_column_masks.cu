// Host-only check of the GNA kernels' column masks (cpp/gna/fwd_softmax.cuh):
// 1. the wgmma accumulator layout they assume: column n of thread t's (rows, cols) view of a
//    64xN S fragment (RowColView) is KV-tile row 2 (t % 4) + (n & 1) + 8 (n >> 1), for the
//    kernels' TiledMmaQK with 128-row (head_dim <= 128) and 64-row (head_dim 256) KV tiles;
// 2. AxisColumnMask against a per-column test, for every split of the KV-tile row bits between
//    the axes, every q, and windows starting before, inside and past the tile.
// Run by tools/compile_cuda_check.sh; needs no GPU.
#include <cstdint>
#include <cstdio>
#include <cute/tensor.hpp>

#include "gna/fwd_device.cuh"
#include "gna/fwd_layouts.cuh"
#include "gna/fwd_softmax.cuh"

namespace {

template <int kBlockKV>
int CheckLayout() {
  using namespace cute;
  using L = jaxk::gna::FwdLayouts<cutlass::bfloat16_t, 64, 128, kBlockKV, 2>;
  typename L::TiledMmaQK mma;
  int bad = 0;
  for (int t = 0; t < 256; ++t) {
    auto thr = mma.get_thread_slice(t);
    Tensor c = thr.partition_C(make_identity_tensor(Shape<_128, Int<kBlockKV>>{}));
    Tensor rc = make_tensor(c.data(), jaxk::gna::RowColView(c.layout()));
    static_assert(decltype(size<1>(rc))::value == kBlockKV / 4);
    for (int n = 0; n < kBlockKV / 4; ++n) {
      const int want = 2 * (t % 4) + (n & 1) + 8 * (n >> 1);
      for (int m = 0; m < size<0>(rc); ++m) bad += get<1>(rc(m, n)) != want;
    }
  }
  return bad;
}

int CheckMasks(int row_bits) {
  const int cols = (1 << row_bits) / 4;
  long cases = 0;
  int bad = 0;
  for (int s0 = 0; s0 <= row_bits; ++s0) {
    for (int s1 = 0; s0 + s1 <= row_bits; ++s1) {
      const int bits[3] = {s0, s1, row_bits - s0 - s1};
      const int pos[3] = {bits[1] + bits[2], bits[2], 0};
      for (int q = 0; q < 4; ++q) {
        for (int a = 0; a < 3; ++a) {
          const int extent = 1 << bits[a];
          for (int lo = -3; lo <= extent + 2; ++lo) {
            for (int hi = lo; hi <= extent + 5; ++hi) {
              const uint32_t got = jaxk::gna::AxisColumnMask(lo, hi, pos[a], bits[a], 2 * q);
              for (int n = 0; n < cols; ++n) {
                const int row = 2 * q + (n & 1) + 8 * (n >> 1);
                const int coord = (row >> pos[a]) & (extent - 1);
                const bool want = lo <= coord && coord < hi;
                bad += ((got >> n) & 1u) != static_cast<uint32_t>(want);
              }
              ++cases;
            }
          }
        }
      }
    }
  }
  std::printf("column masks, %d-row KV tiles: %ld windows checked\n", 1 << row_bits, cases);
  return bad;
}

}  // namespace

int main() {
  const int bad = CheckLayout<128>() + CheckLayout<64>() + CheckMasks(7) + CheckMasks(6);
  if (bad != 0) {
    std::printf("column masks: %d mismatches\n", bad);
    return 1;
  }
  std::printf("column masks: layout and masks match\n");
  return 0;
}
