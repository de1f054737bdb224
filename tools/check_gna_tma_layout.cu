// Host-only check that the TMA producer of the GNA forward kernel writes the shared-memory bytes
// the wgmma consumers read: for every (token, column, stage) of the Q/K/V layouts
// (cpp/gna/fwd_layouts.cuh), the address CuTe gives equals where a TMA box with the map's
// swizzle puts it (box of kAtomCols columns x 128 tokens, dense rows, the 16-byte chunk index
// XORed with bits 7.. of the shared address; 128B swizzle: 3 bits, 64B: 2 bits).
// Run by tools/compile_cuda_check.sh; needs no GPU.
#include <cstdio>
#include <cstdlib>
#include <cute/tensor.hpp>

#include "gna/fwd_layouts.cuh"

namespace {

int TmaByte(int box_base, int token, int col, int row_bytes) {
  const int addr = box_base + token * row_bytes + col * 2;
  const int mask = row_bytes == 128 ? 7 : 3;
  return addr ^ (((addr >> 7) & mask) << 4);
}

template <class Element, int kHeadDim>
int Check() {
  using namespace cute;
  using L = jaxk::gna::FwdLayouts<Element, kHeadDim, 128, 128, 3>;
  constexpr int kBox = L::kAtomCols;
  constexpr int kRowBytes = kBox * 2;
  static_assert(sizeof(Element) == 2);
  auto* buf = static_cast<Element*>(std::aligned_alloc(1024, 1 << 20));
  auto sq = make_tensor(make_smem_ptr(buf), typename L::SmemLayoutQ{});
  auto sk = make_tensor(make_smem_ptr(buf), typename L::SmemLayoutK{});
  auto sv = make_tensor(make_smem_ptr(buf), typename L::SmemLayoutV{});
  auto at = [&](const Element& e) {
    return static_cast<int>(reinterpret_cast<const char*>(&e) - reinterpret_cast<char*>(buf));
  };
  int bad = 0;
  for (int s = 0; s < L::kStages; ++s) {
    for (int t = 0; t < 128; ++t) {
      for (int c = 0; c < kHeadDim; ++c) {
        const int kb = c / kBox;
        const int k_base = at(sk(0, kb * kBox, s));
        const int v_base = at(sv(kb * kBox, 0, s));
        bad += k_base % 1024 != 0 || v_base % 1024 != 0;
        bad += at(sk(t, c, s)) != TmaByte(k_base, t, c % kBox, kRowBytes);
        bad += at(sv(c, t, s)) != TmaByte(v_base, t, c % kBox, kRowBytes);
        if (s == 0) {
          const int q_base = at(sq(0, kb * kBox));
          bad += q_base % 1024 != 0 || at(sq(t, c)) != TmaByte(q_base, t, c % kBox, kRowBytes);
        }
      }
    }
  }
  std::free(buf);
  std::printf("head_dim %3d, %d-bit: %s\n", kHeadDim, int(sizeof_bits_v<Element>),
              bad ? "MISMATCH" : "ok");
  return bad;
}

}  // namespace

int main() {
  const int bad = Check<cute::bfloat16_t, 32>() + Check<cute::bfloat16_t, 64>() +
                  Check<cute::bfloat16_t, 128>() + Check<cute::half_t, 32>() +
                  Check<cute::half_t, 64>() + Check<cute::half_t, 128>();
  return bad == 0 ? 0 : 1;
}
