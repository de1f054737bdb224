// Shared-memory layouts and wgmma tiles of the GNA forward kernels (sm_90a), shared by the
// non-specialised and the warp-specialised kernels.
#pragma once

#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/tensor.hpp>
#include <type_traits>

namespace jaxk::gna {

// Q (kBlockQ, head_dim) and K (kBlockKV, head_dim, stage) are K-major; V is stored
// (head_dim, kBlockKV, stage) with head_dim contiguous, the MN-major B operand of O += P V. Per
// token row all three hold the same bytes: rows of 128 (head_dim 32: 64) bytes, 16-byte chunks
// swizzled, k-blocks of 64 (32) columns one after the other. The TMA kernel relies on that.
template <class Element_, int kHeadDim_, int kBlockQ_, int kBlockKV_, int kStages_>
struct FwdLayouts {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockQ = kBlockQ_;
  static constexpr int kBlockKV = kBlockKV_;
  static constexpr int kStages = kStages_;

  static constexpr bool kSw128 = kHeadDim % 64 == 0;
  // Columns of one swizzle atom row (128 or 64 bytes).
  static constexpr int kAtomCols = kSw128 ? 64 : 32;
  using AtomK = std::conditional_t<kSw128, cute::GMMA::Layout_K_SW128_Atom<Element>,
                                   cute::GMMA::Layout_K_SW64_Atom<Element>>;
  using AtomMN = std::conditional_t<kSw128, cute::GMMA::Layout_MN_SW128_Atom<Element>,
                                    cute::GMMA::Layout_MN_SW64_Atom<Element>>;
  using SmemLayoutQ = decltype(cute::tile_to_shape(
      AtomK{}, cute::Shape<cute::Int<kBlockQ>, cute::Int<kHeadDim>>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(
      AtomK{}, cute::Shape<cute::Int<kBlockKV>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));
  using SmemLayoutV = decltype(cute::tile_to_shape(
      AtomMN{}, cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockKV>, cute::Int<kStages>>{},
      cute::Step<cute::_2, cute::_1, cute::_3>{}));

  using WarpGroups = cute::Layout<cute::Shape<cute::_2, cute::_1, cute::_1>>;
  using TiledMmaQK = decltype(cute::make_tiled_mma(
      cute::SM90::GMMA::ss_op_selector<
          Element, Element, float,
          cute::Shape<cute::_64, cute::Int<kBlockKV>, cute::Int<kHeadDim>>>(),
      WarpGroups{}));
  using TiledMmaPV = decltype(cute::make_tiled_mma(
      cute::SM90::GMMA::rs_op_selector<
          Element, Element, float, cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockKV>>,
          cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      WarpGroups{}));

  static constexpr int kSmemQ = cute::cosize_v<SmemLayoutQ>;
  static constexpr int kSmemK = cute::cosize_v<SmemLayoutK>;
  static constexpr int kSmemV = cute::cosize_v<SmemLayoutV>;
};

}  // namespace jaxk::gna
