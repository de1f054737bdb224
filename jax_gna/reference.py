"""Memory-efficient pure-JAX Generalized Neighborhood Attention (the reference twin).

This is the CPU/TPU path, the fallback when the CUDA extension is missing, and the reference the
CUDA kernel is tested against. It never builds the ``N x N`` score matrix: tokens are regrouped
by dilation phase, the grid is cut into query tiles, and each tile attends only to the box of
keys that the union of its queries' windows covers (the simulator's "dynamic" tiling). Tiles
are processed in chunks with :func:`jax.lax.map`, so peak memory grows like
``N * box`` (about ``N * window``) for any problem size, and each chunk is rematerialised in the
backward pass (``jax.checkpoint``) so gradients stay within the same bound.

Every geometric quantity (windows, boxes, masks) comes from :mod:`simulator.geometry`,
evaluated in NumPy at trace time for the static shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from simulator import geometry
from simulator.geometry import GNAParams

# Upper bound on the float32 bytes one chunk of query tiles may hold (scores, probabilities and
# the gathered key/value boxes). Chosen so that the working set fits comfortably on a CPU node
# or a GPU while leaving enough tiles per chunk for good vectorisation.
_CHUNK_BYTES = 96 * 2**20
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class _AxisPlan:
    """Query tiling of one spatial axis, in dilation-group coordinates (all NumPy)."""

    n: int  # tokens on the axis
    d: int  # dilation (number of groups)
    length: int  # ceil(n / d): group length after padding every group to the longest one
    tile: int  # query tile length
    num_tiles: int  # query tiles per group
    box: int  # key box length shared by all tiles of this axis
    box_start: np.ndarray  # [d, num_tiles] first key (in-group index) of each tile's box
    mask: np.ndarray  # [d, num_tiles, tile, box] key visible to query along this axis


def default_query_tile(kernel_size: int, stride: int, length: int) -> int:
    """Query tile length along one axis: a stride group when strided (all of its queries share
    one window, so the box is exactly the window), else about half a window."""
    tile = stride if stride > 1 else max(1, -(-kernel_size // 2))
    return min(tile, length)


def _plan_axis(n: int, w: int, s: int, d: int, causal: bool, tile: int) -> _AxisPlan:
    length = -(-n // d)
    tile = min(tile, length)
    num_tiles = -(-length // tile)
    n_g = geometry.group_lengths(n, d)[:, None, None]  # [d, 1, 1]
    j = (np.arange(num_tiles)[:, None] * tile + np.arange(tile)[None, :])[None]  # [1, T, t]
    # Queries past the end of their group are padding: give them the last real query's window
    # so every row has visible keys (no NaNs); their outputs are cropped away.
    j = np.minimum(j, n_g - 1)
    start, end = geometry.window(j, n_g, w, s, causal)  # [d, T, t]
    box_lo, box_hi = start.min(axis=2), end.max(axis=2)  # [d, T]
    box = int((box_hi - box_lo).max())
    box_start = np.minimum(box_lo, length - box)
    keys = box_start[:, :, None, None] + np.arange(box)[None, None, None, :]  # [d, T, 1, box]
    mask = (keys >= start[..., None]) & (keys < end[..., None])
    return _AxisPlan(n, d, length, tile, num_tiles, box, box_start.astype(np.int32), mask)


def _to_groups(x: jax.Array, plans: list[_AxisPlan], pad_to: list[int]) -> jax.Array:
    """``[B, *spatial, H, D] -> [B, *d, *L, H, D]`` where token ``i = j * d + g`` of an axis goes
    to ``(g, j)``; every axis is zero-padded so groups have length ``pad_to``."""
    rank = len(plans)
    pads = [(0, 0)] + [(0, p.d * L - p.n) for p, L in zip(plans, pad_to, strict=True)]
    x = jnp.pad(x, pads + [(0, 0), (0, 0)])
    shape = [x.shape[0]]
    for p, L in zip(plans, pad_to, strict=True):
        shape += [L, p.d]
    x = x.reshape(shape + list(x.shape[-2:]))
    perm = [0] + [2 + 2 * a for a in range(rank)] + [1 + 2 * a for a in range(rank)]
    return x.transpose(perm + [2 * rank + 1, 2 * rank + 2])


def _from_groups(x: jax.Array, plans: list[_AxisPlan]) -> jax.Array:
    """Inverse of :func:`_to_groups` (crops the padding): ``[B, *d, *L, ...] -> [B, *n, ...]``."""
    rank = len(plans)
    perm = [0]
    for a in range(rank):
        perm += [1 + rank + a, 1 + a]
    x = x.transpose(perm + [2 * rank + 1, 2 * rank + 2])
    shape = [x.shape[0]]
    for a, p in enumerate(plans):
        shape.append(x.shape[1 + 2 * a] * p.d)
    x = x.reshape(shape + list(x.shape[-2:]))
    return x[(slice(None),) + tuple(slice(0, p.n) for p in plans)]


@partial(jax.jit, static_argnames=("params", "scale", "query_tile"))
def gna_reference(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    params: GNAParams,
    scale: float,
    query_tile: tuple[int, ...] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Neighborhood attention, tile by tile, in float32 (float64 for float64 inputs).

    Args:
      query: ``[B, *spatial, heads_q, head_dim]``.
      key: ``[B, *spatial, heads_kv, head_dim]`` with ``heads_q % heads_kv == 0`` (GQA/MQA).
      value: ``[B, *spatial, heads_kv, head_dim_v]``.
      params: validated :class:`simulator.geometry.GNAParams` for ``spatial``.
      scale: multiplier of the dot products (usually ``head_dim ** -0.5``).
      query_tile: optional query tile length per axis (in dilation-group coordinates).

    Returns:
      ``(out, lse)``: ``out`` ``[B, *spatial, heads_q, head_dim_v]`` in ``value.dtype`` and the
      float32 (float64 for float64 inputs) natural-log sum of exponentials of the scaled
      scores ``[B, *spatial, heads_q]``.
    """
    rank = params.rank
    batch = query.shape[0]
    compute = jnp.promote_types(query.dtype, jnp.float32)
    heads_q, heads_kv = query.shape[-2], key.shape[-2]
    group = heads_q // heads_kv
    dim_v = value.shape[-1]
    if query_tile is None:
        query_tile = tuple(default_query_tile(w, s, -(-n // d)) for n, w, s, d, _ in params.axes())
    plans = [
        _plan_axis(n, w, s, d, c, t)
        for (n, w, s, d, c), t in zip(params.axes(), query_tile, strict=True)
    ]

    q = _to_groups(query, plans, [p.num_tiles * p.tile for p in plans])
    k = _to_groups(key, plans, [p.length for p in plans])
    v = _to_groups(value, plans, [p.length for p in plans])

    # Query tiles: [B, *d, *(T, t), Hq, D] -> [*(d, T), B, *t, Hq, D] -> [num_tiles, B, *t, ...]
    tiled_shape = [batch] + [p.d for p in plans]
    for p in plans:
        tiled_shape += [p.num_tiles, p.tile]
    q = q.reshape(tiled_shape + list(q.shape[-2:]))
    perm = []
    for a in range(rank):
        perm += [1 + a, 1 + rank + 2 * a]
    perm += [0] + [2 + rank + 2 * a for a in range(rank)]
    perm += [1 + 3 * rank, 2 + 3 * rank]
    q = q.transpose(perm)
    grid = [n for p in plans for n in (p.d, p.num_tiles)]
    q_tiles = q.reshape((math.prod(grid), batch) + q.shape[2 * rank + 1 :])

    # Per-tile (group, tile) index along every axis, in the same order as q_tiles.
    idx = np.stack(np.unravel_index(np.arange(math.prod(grid)), grid), axis=1).astype(np.int32)
    box_starts = jnp.asarray(
        np.stack(
            [plans[a].box_start[idx[:, 2 * a], idx[:, 2 * a + 1]] for a in range(rank)], axis=1
        )
    )
    groups = jnp.asarray(idx[:, 0::2])
    masks = [jnp.asarray(p.mask) for p in plans]
    box_shape = tuple(p.box for p in plans)
    tile_shape = tuple(p.tile for p in plans)
    num_q, num_k = math.prod(tile_shape), math.prod(box_shape)

    def one_tile(args):
        q_tile, group_idx, tile_idx, box_start = args
        zero = jnp.zeros((), jnp.int32)  # index dtypes must agree, also under x64
        start = (zero,) + tuple(group_idx[a].astype(jnp.int32) for a in range(rank))
        start += tuple(box_start[a].astype(jnp.int32) for a in range(rank)) + (zero, zero)
        size_k = (batch,) + (1,) * rank + box_shape
        kb = jax.lax.dynamic_slice(k, start, size_k + (heads_kv, k.shape[-1]))
        vb = jax.lax.dynamic_slice(v, start, size_k + (heads_kv, dim_v))
        kb = kb.reshape(batch, num_k, heads_kv, -1).astype(compute)
        vb = vb.reshape(batch, num_k, heads_kv, dim_v).astype(compute)
        qt = q_tile.reshape(batch, num_q, heads_kv, group, -1).astype(compute)
        scores = jnp.einsum("bqhgd,bkhd->bhgqk", qt, kb, precision=_HIGHEST) * scale
        mask = jnp.ones((1,) * (2 * rank), dtype=bool)
        for a in range(rank):
            m = masks[a][group_idx[a], tile_idx[a]]  # [tile_a, box_a]
            shape = [1] * (2 * rank)
            shape[a], shape[rank + a] = tile_shape[a], box_shape[a]
            mask = mask & m.reshape(shape)
        mask = mask.reshape(num_q, num_k)
        scores = jnp.where(mask, scores, -jnp.inf)
        row_max = jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
        probs = jnp.exp(scores - row_max)
        denom = probs.sum(axis=-1, keepdims=True)
        out = jnp.einsum("bhgqk,bkhd->bqhgd", probs / denom, vb, precision=_HIGHEST)
        lse = (row_max + jnp.log(denom))[..., 0]  # [b, h, g, q]
        out = out.reshape((batch,) + tile_shape + (heads_q, dim_v))
        lse = lse.transpose(0, 3, 1, 2).reshape((batch,) + tile_shape + (heads_q,))
        return out, lse

    per_tile_bytes = (
        4 * batch * (3 * heads_q * num_q * num_k + 2 * num_k * heads_kv * (k.shape[-1] + dim_v))
    )
    chunk = max(1, min(q_tiles.shape[0], _CHUNK_BYTES // max(per_tile_bytes, 1)))
    tile_args = (q_tiles, groups, jnp.asarray(idx[:, 1::2]), box_starts)
    if chunk >= q_tiles.shape[0]:
        out_tiles, lse_tiles = jax.vmap(one_tile)(tile_args)
    else:
        out_tiles, lse_tiles = jax.lax.map(jax.checkpoint(one_tile), tile_args, batch_size=chunk)
    out = _untile(out_tiles, plans, grid)
    lse = _untile(lse_tiles[..., None], plans, grid)[..., 0]
    return out.astype(value.dtype), lse


def _untile(x: jax.Array, plans: list[_AxisPlan], grid: list[int]) -> jax.Array:
    """``[num_tiles, B, *t, H, C] -> [B, *spatial, H, C]`` (inverse of the query tiling)."""
    rank = len(plans)
    x = x.reshape(grid + list(x.shape[1:]))  # [*(d, T), B, *t, H, C]
    perm = [2 * rank]
    perm += [2 * a for a in range(rank)]
    for a in range(rank):
        perm += [2 * a + 1, 2 * rank + 1 + a]
    perm += [3 * rank + 1, 3 * rank + 2]
    x = x.transpose(perm)  # [B, *d, *(T, t), H, C]
    shape = [x.shape[0]] + [p.d for p in plans] + [p.num_tiles * p.tile for p in plans]
    x = x.reshape(shape + list(x.shape[-2:]))
    return _from_groups(x, plans)
