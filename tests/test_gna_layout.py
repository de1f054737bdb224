"""Token permutation: exact round trips and the tiled order."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jax_gna import make_layout, permute_tokens, unpermute_tokens


@pytest.mark.parametrize("seed", range(12))
def test_round_trip_is_exact(seed):
    rng = np.random.default_rng(seed)
    rank = seed % 3 + 1
    spatial = tuple(int(n) for n in rng.integers(1, 13, size=rank))
    tile = tuple(int(t) for t in rng.integers(1, 6, size=rank))
    dilation = tuple(int(d) for d in rng.integers(1, 4, size=rank))
    x = jnp.asarray(rng.standard_normal((2, *spatial, 3, 5)), jnp.float32)
    permuted, layout = permute_tokens(x, tile, dilation)
    assert permuted.shape[0] == 2 * int(np.prod(dilation))
    assert permuted.shape[1] == layout.tokens_per_group
    np.testing.assert_array_equal(unpermute_tokens(permuted, layout), x)


def test_tiles_are_contiguous_runs_in_group_order():
    """2-D grid 6x4, tile (2, 2), dilation (1, 2): token (r, c) goes to batch c % 2, tile
    (r // 2, (c // 2) // 2), and each tile is prod(tile) consecutive tokens."""
    rows, cols = 6, 4
    ids = jnp.arange(rows * cols, dtype=jnp.float32).reshape(1, rows, cols, 1, 1)
    permuted, layout = permute_tokens(ids, (2, 2), (1, 2))
    assert layout.num_tiles == (3, 1) and layout.padded_shape == (6, 4)
    flat = np.asarray(permuted[..., 0, 0])
    # group 0 holds columns 0 and 2; its first tile is rows 0-1 x in-group columns 0-1
    np.testing.assert_array_equal(flat[0, :4], [0, 2, 4, 6])
    np.testing.assert_array_equal(flat[1, :4], [1, 3, 5, 7])


def test_padding_is_zero_and_cropped():
    x = jnp.ones((1, 5, 1, 1))
    permuted, layout = permute_tokens(x, 4)
    assert permuted.shape == (1, 8, 1, 1)
    np.testing.assert_array_equal(np.asarray(permuted[0, :, 0, 0]), [1] * 5 + [0] * 3)
    assert unpermute_tokens(permuted, layout).shape == x.shape


def test_layout_errors():
    with pytest.raises(ValueError, match="tile_shape entries must be positive"):
        make_layout((8, 8), (0, 2))
    with pytest.raises(ValueError, match="tile_shape must have one entry per spatial axis"):
        make_layout((8, 8), (2, 2, 2))
    with pytest.raises(ValueError, match="x must be"):
        permute_tokens(jnp.zeros((8, 8)), 2)
    _, layout = permute_tokens(jnp.zeros((1, 8, 1, 1)), 4)
    with pytest.raises(ValueError, match="for this layout"):
        unpermute_tokens(jnp.zeros((1, 7, 1, 1)), layout)
