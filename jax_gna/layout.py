"""Token permutation: the multi-dimensional tiled layout that turns neighbourhoods into blocks.

Each spatial axis of length ``n`` is zero-padded to a multiple of ``tile * dilation`` and viewed
as ``(tile index, offset in tile, dilation phase)``; the dilation phases move into the batch, and
tokens are ordered ``[batch * prod(dilation), *num_tiles, *tile, heads, dim]`` flattened to
``[batch * prod(dilation), tokens, heads, dim]``, so that each tile is one contiguous run of
``prod(tile)`` tokens. A model whose layers share one layout can permute once at entry and
un-permute once at exit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from simulator.geometry import validate_tile_shape


@dataclass(frozen=True)
class TokenLayout:
    """Static description of a permuted layout (everything needed to undo it)."""

    spatial_shape: tuple[int, ...]
    tile_shape: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def num_tiles(self) -> tuple[int, ...]:
        """Tiles per axis within one dilation group."""
        return tuple(
            -(-n // (t * d))
            for n, t, d in zip(self.spatial_shape, self.tile_shape, self.dilation, strict=True)
        )

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(
            nt * t * d
            for nt, t, d in zip(self.num_tiles, self.tile_shape, self.dilation, strict=True)
        )

    @property
    def tokens_per_group(self) -> int:
        return math.prod(self.num_tiles) * math.prod(self.tile_shape)


def make_layout(
    spatial_shape: Sequence[int], tile_shape: int | Sequence[int], dilation: int | Sequence[int] = 1
) -> TokenLayout:
    """Validated :class:`TokenLayout` (tile shape and dilation: positive, one per axis)."""
    shape = tuple(int(n) for n in spatial_shape)
    if len(shape) not in (1, 2, 3) or any(n < 1 for n in shape):
        raise ValueError(f"spatial_shape must have 1-3 positive sizes, got {shape}")
    tile = validate_tile_shape("tile_shape", tile_shape, len(shape))
    dil = validate_tile_shape("dilation", dilation, len(shape))
    return TokenLayout(shape, tile, dil)


def permute_tokens(
    x: jax.Array, tile_shape: int | Sequence[int], dilation: int | Sequence[int] = 1
) -> tuple[jax.Array, TokenLayout]:
    """``[batch, *spatial, heads, dim] -> [batch * prod(dilation), tokens, heads, dim]``.

    Padding tokens are zeros. Returns the permuted array and the layout to undo it.
    """
    if x.ndim not in (4, 5, 6):
        raise ValueError(f"x must be [batch, *spatial (1-3 axes), heads, dim], got {x.shape}")
    layout = make_layout(x.shape[1:-2], tile_shape, dilation)
    rank = len(layout.spatial_shape)
    batch, heads, dim = x.shape[0], x.shape[-2], x.shape[-1]
    pads = [(0, p - n) for p, n in zip(layout.padded_shape, layout.spatial_shape, strict=True)]
    x = jnp.pad(x, [(0, 0), *pads, (0, 0), (0, 0)])
    split = [batch]
    for nt, t, d in zip(layout.num_tiles, layout.tile_shape, layout.dilation, strict=True):
        split += [nt, t, d]
    x = x.reshape(split + [heads, dim])
    # axes: 0 batch, then per axis a: 1+3a tile index, 2+3a offset, 3+3a dilation phase
    perm = [0] + [3 + 3 * a for a in range(rank)]
    perm += [1 + 3 * a for a in range(rank)] + [2 + 3 * a for a in range(rank)]
    x = x.transpose(perm + [1 + 3 * rank, 2 + 3 * rank])
    x = x.reshape(batch * math.prod(layout.dilation), layout.tokens_per_group, heads, dim)
    return x, layout


def unpermute_tokens(x: jax.Array, layout: TokenLayout) -> jax.Array:
    """Inverse of :func:`permute_tokens`: ``[batch * prod(d), tokens, heads, dim] ->
    [batch, *spatial, heads, dim]`` (padding dropped)."""
    rank = len(layout.spatial_shape)
    groups = math.prod(layout.dilation)
    if x.ndim != 4 or x.shape[0] % groups or x.shape[1] != layout.tokens_per_group:
        raise ValueError(
            f"x must be [batch * {groups}, {layout.tokens_per_group}, heads, dim] for this layout, "
            f"got {x.shape}"
        )
    batch, heads, dim = x.shape[0] // groups, x.shape[-2], x.shape[-1]
    x = x.reshape([batch, *layout.dilation, *layout.num_tiles, *layout.tile_shape, heads, dim])
    perm = [0]
    for a in range(rank):
        perm += [1 + rank + a, 1 + 2 * rank + a, 1 + a]
    x = x.transpose(perm + [1 + 3 * rank, 2 + 3 * rank])
    x = x.reshape([batch, *layout.padded_shape, heads, dim])
    return x[(slice(None),) + tuple(slice(0, n) for n in layout.spatial_shape)]
