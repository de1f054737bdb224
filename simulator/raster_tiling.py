"""Exact block-sparsity of GNA under a 1-D tiling of the flattened raster order ("1d" mode).

This is what plain FMHA with a block-sparse mask sees when tokens are NOT permuted: Q tiles are
runs of ``q_tile`` consecutive raster tokens, KV tiles runs of ``kv_tile`` tokens, and a tile pair
is visited iff at least one of its (query, key) entries is unmasked.

Method (per-axis interval arithmetic, never per token pair):

1. A raster run of queries is a union of at most ``2 * rank - 1`` axis-aligned boxes
   (:func:`raster_boxes`).
2. The union of the neighbourhoods of a box of queries is the product over axes of the per-axis
   unions of windows; per axis and dilation phase that union is one in-group interval
   (windows are monotone and overlapping). So the visible keys of a box are, for every key
   *row* (fixed leading coordinates) in the product of the leading axes' unions, one arithmetic
   progression per dilation phase of the last axis.
3. A progression ``p0, p0 + d, ...`` with ``d <= kv_tile`` hits every KV tile between its first
   and last element (one contiguous range of KV tiles); with ``d > kv_tile`` each element is
   its own range.
4. Ranges are merged per Q tile (sort + running max), giving the exact visited set.

Perfect block-sparsity uses the dual fact: the keys seen by *every* query of a Q tile form a
product box ``prod_a J_a`` (``J_a`` = intersection of the axis-``a`` windows over the axis-``a``
coordinates the Q tile touches); a visited KV tile is fully unmasked iff its real tokens all lie in
that box, which is checked by counting box members in raster prefixes (digit arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator import geometry
from simulator.axis_tiling import ceil_div
from simulator.geometry import GNAParams

# Upper bound on the number of (box, key row, phase) items materialised at once.
_CHUNK_ITEMS = 1 << 22


@dataclass(frozen=True)
class RasterTiling:
    """Visited KV tiles of every Q tile of a 1-D raster tiling.

    Attributes:
      q_tile, kv_tile: tokens per Q / KV tile.
      num_q_tiles, num_kv_tiles: ``ceil(N / q_tile)``, ``ceil(N / kv_tile)``.
      indptr: ``[num_q_tiles + 1]`` CSR pointers into ``lo`` / ``hi``.
      lo, hi: merged, sorted ranges of visited KV tile indices, inclusive, per Q tile.
      count: ``[num_q_tiles]`` visited KV tiles of each Q tile.
      perfect: every visited pair is fully unmasked on its real (in-grid) tokens.
    """

    q_tile: int
    kv_tile: int
    num_q_tiles: int
    num_kv_tiles: int
    indptr: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray
    perfect: bool

    def visited(self, q_tile_index: int) -> np.ndarray:
        """``[count]`` sorted KV tile indices visited by Q tile ``q_tile_index``."""
        a, b = self.indptr[q_tile_index], self.indptr[q_tile_index + 1]
        if a == b:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(
            [
                np.arange(lo, hi + 1, dtype=np.int64)
                for lo, hi in zip(self.lo[a:b], self.hi[a:b], strict=True)
            ]
        )


# --------------------------------------------------------------------------------------------
# Raster runs as boxes
# --------------------------------------------------------------------------------------------


def raster_boxes(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]):
    """Split raster runs ``[a, b)`` (``a < b``, ``[m]`` each) of a row-major grid into boxes.

    Returns ``(owner [B], lo [B, rank], hi [B, rank])``: box ``i`` is the product of the half-open
    coordinate ranges ``[lo[i, k], hi[i, k])`` and belongs to run ``owner[i]``; the boxes of a run
    are disjoint and cover it exactly (at most ``2 * rank - 1`` per run).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    m = a.shape[0]
    if len(shape) == 1:
        return np.arange(m, dtype=np.int64), a[:, None], b[:, None]
    rank, inner = len(shape), int(np.prod(shape[1:], dtype=np.int64))
    a0, ar = np.divmod(a, inner)
    b0, br = np.divmod(b, inner)
    idx = np.arange(m, dtype=np.int64)
    same = a0 == b0  # run inside one slab: recurse with prefix a0
    head = ~same & (ar > 0)  # partial first slab
    tail = ~same & (br > 0)  # partial last slab
    mid_lo = a0 + head
    mid = ~same & (mid_lo < b0)  # full slabs [mid_lo, b0)
    n_mid = int(mid.sum())
    owners = [idx[mid]]
    los = [np.concatenate([mid_lo[mid, None], np.zeros((n_mid, rank - 1), np.int64)], 1)]
    full_rest = np.broadcast_to(np.asarray(shape[1:], dtype=np.int64), (n_mid, rank - 1))
    his = [np.concatenate([b0[mid, None], full_rest], 1)]
    sub_owner = np.concatenate([idx[same], idx[head], idx[tail]])
    sub_prefix = np.concatenate([a0[same], a0[head], b0[tail]])
    sub_a = np.concatenate([ar[same], ar[head], np.zeros(int(tail.sum()), np.int64)])
    sub_b = np.concatenate([br[same], np.full(int(head.sum()), inner, np.int64), br[tail]])
    if sub_owner.size:
        o, lo, hi = raster_boxes(sub_a, sub_b, shape[1:])
        owners.append(sub_owner[o])
        los.append(np.concatenate([sub_prefix[o, None], lo], 1))
        his.append(np.concatenate([sub_prefix[o, None] + 1, hi], 1))
    return np.concatenate(owners), np.concatenate(los), np.concatenate(his)


# --------------------------------------------------------------------------------------------
# Visited tiles
# --------------------------------------------------------------------------------------------


def _axis_union(x0, x1, n, w, s, d, causal):
    """Per dilation phase, the in-group union of windows of grid coordinates ``[x0, x1)``.

    Returns ``ks, ke, present``, each ``[B, d]``: phase ``g`` contributes keys
    ``g + d * [ks, ke)`` iff ``present``.
    """
    g = np.arange(d, dtype=np.int64)
    n_g = geometry.group_lengths(n, d)
    j0 = (x0[:, None] - g + d - 1) // d
    j1 = (x1[:, None] - g + d - 1) // d
    present = j1 > j0
    j0 = np.minimum(j0, n_g - 1)
    j1 = np.maximum(j1, j0 + 1)
    ks, ke = geometry.tile_kv_box(j0, j1, n_g, w, s, causal)
    return ks, ke, present


def _ragged_coords(ks, ke, present, d):
    """Flatten per-box key coordinate lists (all phases): ``(length [B], ptr [B], values)``."""
    seg_len = np.where(present, ke - ks, 0)
    length = seg_len.sum(1)
    ptr = np.cumsum(length) - length
    flat_len = seg_len.ravel()
    first = (np.arange(d, dtype=np.int64) + d * ks).ravel()
    seg_off = np.cumsum(flat_len) - flat_len
    pos = np.arange(int(flat_len.sum()), dtype=np.int64) - np.repeat(seg_off, flat_len)
    values = np.repeat(first, flat_len) + d * pos
    return length, ptr, values


def _expand(counts):
    """For items with ``counts`` children each: ``(parent [M], position-in-parent [M])``."""
    parent = np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)
    start = np.cumsum(counts) - counts
    return parent, np.arange(parent.shape[0], dtype=np.int64) - start[parent]


def _merge(q, lo, hi, num_kv):
    """Merge inclusive ranges ``[lo, hi]`` per key ``q``; returns sorted merged ``(q, lo, hi)``."""
    if q.size == 0:
        return q, lo, hi
    stride = num_kv + 1
    lo2 = q * stride + lo
    order = np.argsort(lo2, kind="stable")
    lo2 = lo2[order]
    hi2 = q[order] * stride + hi[order]
    run_max = np.maximum.accumulate(hi2)
    new = np.ones(lo2.shape[0], dtype=bool)
    new[1:] = lo2[1:] > run_max[:-1] + 1
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], lo2.shape[0]) - 1
    mq = lo2[starts] // stride
    return mq, lo2[starts] - mq * stride, run_max[ends] - mq * stride


def _box_ranges(params: GNAParams, lo, hi, kv_tile):
    """KV tile ranges touched by the neighbourhood of each box: ``(box [M], lo [M], hi [M])``."""
    shape, r = params.spatial_shape, params.rank
    unions = [
        _axis_union(
            lo[:, a],
            hi[:, a],
            shape[a],
            params.kernel_size[a],
            params.stride[a],
            params.dilation[a],
            params.is_causal[a],
        )
        for a in range(r)
    ]
    # Key rows: product of the leading axes' coordinate lists.
    box = np.arange(lo.shape[0], dtype=np.int64)
    row = np.zeros_like(box)
    for a in range(r - 1):
        length, ptr, values = _ragged_coords(*unions[a], params.dilation[a])
        parent, pos = _expand(length[box])
        box = box[parent]
        row = row[parent] * shape[a] + values[ptr[box] + pos]
    # Last axis: one arithmetic progression per (row, phase).
    ks, ke, present = unions[-1]
    d, n_last = params.dilation[-1], shape[-1]
    base = row[:, None] * n_last + np.arange(d, dtype=np.int64)
    sel = present[box]
    item_box = np.broadcast_to(box[:, None], sel.shape)[sel]
    p0 = (base + d * ks[box])[sel]
    length = (ke - ks)[box][sel]
    if d <= kv_tile:
        return item_box, p0 // kv_tile, (p0 + d * (length - 1)) // kv_tile
    parent, pos = _expand(length)
    tiles = (p0[parent] + d * pos) // kv_tile
    return item_box[parent], tiles, tiles


def _box_weights(params: GNAParams, lo, hi):
    """Number of items :func:`_box_ranges` materialises per box (for chunking)."""
    weight = np.ones(lo.shape[0], dtype=np.int64)
    for a in range(params.rank):
        d = params.dilation[a]
        # The union of windows of a coordinate range spans at most (range + w) * d coordinates.
        span = np.minimum(
            hi[:, a] - lo[:, a] + 2 * params.kernel_size[a] * d, params.spatial_shape[a]
        )
        if a < params.rank - 1:
            weight *= span
        else:
            weight *= span if d > 1 else 1
    return weight


def _chunks(weights, limit):
    """Split ``range(len(weights))`` into consecutive slices of total weight about ``limit``
    (a single heavier entry gets a slice of its own)."""
    cum = np.cumsum(weights)
    total = int(cum[-1]) if cum.size else 0
    cuts = np.searchsorted(cum, np.arange(limit, total, limit), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [weights.shape[0]]]))
    return [slice(int(x), int(y)) for x, y in zip(bounds[:-1], bounds[1:], strict=True)]


# --------------------------------------------------------------------------------------------
# Perfect block-sparsity
# --------------------------------------------------------------------------------------------


def _common_keys(params: GNAParams, owner, lo, hi, num_q):
    """Per Q tile and axis, the keys every query of the tile sees: ``[num_q]`` arrays per axis
    ``(phase, js, je)`` meaning coordinates ``phase + d * [js, je)`` (empty iff ``je <= js``)."""
    out = []
    for a in range(params.rank):
        n, w, s, d, c = (
            params.spatial_shape[a],
            params.kernel_size[a],
            params.stride[a],
            params.dilation[a],
            params.is_causal[a],
        )
        x_min = np.full(num_q, n, dtype=np.int64)
        x_max = np.full(num_q, -1, dtype=np.int64)
        np.minimum.at(x_min, owner, lo[:, a])
        np.maximum.at(x_max, owner, hi[:, a] - 1)
        mixed = np.zeros(num_q, dtype=bool)
        if d > 1:
            # Several phases meet in one Q tile iff a box spans >1 coordinate or phases differ.
            np.logical_or.at(mixed, owner, hi[:, a] - lo[:, a] > 1)
            ph_min = np.full(num_q, d, dtype=np.int64)
            ph_max = np.full(num_q, -1, dtype=np.int64)
            np.minimum.at(ph_min, owner, lo[:, a] % d)
            np.maximum.at(ph_max, owner, lo[:, a] % d)
            mixed |= ph_min != ph_max
        phase = x_min % d
        n_g = geometry.group_lengths(n, d)[phase]
        js, je = geometry.tile_kv_intersection(x_min // d, x_max // d + 1, n_g, w, s, c)
        je = np.where(mixed, js, je)
        out.append((phase, js, np.maximum(je, js)))
    return out


def _count_below(x, shape, common, d):
    """``#{y < x : y in prod_a J_a}`` for raster positions ``x`` in ``[0, N]`` (``J`` per item)."""
    n_total = int(np.prod(shape, dtype=np.int64))
    digits, rest = [], np.minimum(x, n_total - 1)
    for n in reversed(shape):
        rest, digit = np.divmod(rest, n)
        digits.append(digit)
    digits.reverse()
    sizes = [je - js for _, js, je in common]
    total = np.zeros_like(x)
    inside = np.ones(x.shape, dtype=bool)
    for a, (phase, js, je) in enumerate(common):
        below = np.clip((digits[a] - phase + d[a] - 1) // d[a], js, je) - js
        tail = np.ones_like(x)
        for size in sizes[a + 1 :]:
            tail = tail * size
        total = total + np.where(inside, below * tail, 0)
        j = digits[a] // d[a]
        inside &= (digits[a] % d[a] == phase) & (j >= js) & (j < je)
    full = np.ones_like(x)
    for size in sizes:
        full = full * size
    return np.where(x >= n_total, full, total)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def tile_raster(params: GNAParams, q_tile: int, kv_tile: int) -> RasterTiling:
    """Visited KV tiles and perfect block-sparsity of a 1-D raster tiling (exact)."""
    n_total = int(np.prod(params.spatial_shape, dtype=np.int64))
    num_q = int(ceil_div(n_total, q_tile))
    num_kv = int(ceil_div(n_total, kv_tile))
    starts = np.arange(num_q, dtype=np.int64) * q_tile
    owner, lo, hi = raster_boxes(starts, np.minimum(starts + q_tile, n_total), params.spatial_shape)
    merged = []
    for sl in _chunks(_box_weights(params, lo, hi), _CHUNK_ITEMS):
        box, t_lo, t_hi = _box_ranges(params, lo[sl], hi[sl], kv_tile)
        merged.append(_merge(owner[sl][box], t_lo, t_hi, num_kv))
    q, t_lo, t_hi = _merge(*(np.concatenate(parts) for parts in zip(*merged, strict=True)), num_kv)
    count = np.bincount(q, weights=t_hi - t_lo + 1, minlength=num_q).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(q, minlength=num_q))]).astype(np.int64)

    common = [tuple(arr[q] for arr in axis) for axis in _common_keys(params, owner, lo, hi, num_q)]
    first = t_lo * kv_tile
    last = np.minimum((t_hi + 1) * kv_tile, n_total)
    d = params.dilation
    inside = _count_below(last, params.spatial_shape, common, d) - _count_below(
        first, params.spatial_shape, common, d
    )
    perfect = bool(np.all(inside == last - first))
    return RasterTiling(q_tile, kv_tile, num_q, num_kv, indptr, t_lo, t_hi, count, perfect)
