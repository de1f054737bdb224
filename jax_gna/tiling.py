"""Tile-shape policy and launch tables of the GNA CUDA forward kernel (NumPy, trace time only).

The kernel never evaluates a window formula itself: everything it needs about the neighbourhood
is derived here from :mod:`simulator.geometry` (the one implementation of those formulas) and
handed to it as one small ``int32`` table.

Layout of the table (``rank`` is padded to 3 by adding leading axes of length 1):

* per axis ``a``, ``num_tiles[a]`` *axis tiles*: one per (dilation group, Q tile along the axis),
  8 ints each (see ``ENTRY_FIELDS``) starting at ``axis_offsets[a]``;
* per axis and dilation group, the in-group key window ``(start, end)`` of every in-group query
  index, at ``win_base`` of the axis tiles of that group.

A CTA of the kernel takes one axis tile per axis (their product is a multi-dimensional Q tile),
walks the KV tiles ``[kv_lo, kv_hi)`` of every axis (the simulator's static-tiling box) and
applies the fine-grained mask only to KV tiles outside ``[full_lo, full_hi)`` on some axis.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from simulator.geometry import (
    GNAParams,
    group_lengths,
    tile_kv_box,
    tile_kv_intersection,
    window,
)

#: Q rows per CTA (two consumer warpgroups of 64 rows).
Q_BLOCK = 128
#: Fields of one axis tile in the table, in order.
ENTRY_FIELDS = ("group", "n_g", "q_start", "win_base", "kv_lo", "kv_hi", "full_lo", "full_hi")
ENTRY = len(ENTRY_FIELDS)
KERNEL_RANK = 3
SUPPORTED_HEAD_DIMS = (32, 64, 128, 256)


def kv_block(head_dim: int) -> int:
    """KV tokens per KV tile of the kernel instantiated for ``head_dim`` (shared memory bound)."""
    return 64 if head_dim > 128 else 128


@dataclass(frozen=True)
class AxisTiles:
    """Axis tiles of one spatial axis: ``entries`` ``[m, 8]`` and the window table ``[2 * n]``."""

    entries: np.ndarray
    windows: np.ndarray

    def kv_counts(self) -> np.ndarray:
        """``[m]`` KV tiles visited along this axis by each axis tile."""
        return self.entries[:, 5] - self.entries[:, 4]

    def full_counts(self) -> np.ndarray:
        """``[m]`` KV tiles that need no mask along this axis."""
        return self.entries[:, 7] - self.entries[:, 6]


def axis_tiles(n: int, w: int, s: int, d: int, causal: bool, tq: int, tk: int) -> AxisTiles:
    """Axis tiles of one axis of length ``n`` for Q tile ``tq`` and KV tile ``tk`` (in-group units).

    ``win_base`` is relative to the start of this axis's window table.
    """
    entries, windows, base = [], [], 0
    for g, n_g in enumerate(group_lengths(n, d)):
        n_g = int(n_g)
        j = np.arange(n_g, dtype=np.int64)
        start, end = window(j, n_g, w, s, causal)
        windows.append(np.stack([start, end], axis=1).reshape(-1))
        q0 = np.arange(0, n_g, tq, dtype=np.int64)
        q1 = np.minimum(q0 + tq, n_g)
        box_start, box_end = tile_kv_box(q0, q1, n_g, w, s, causal)
        kv_lo = box_start // tk
        kv_hi = -(-box_end // tk)
        # KV tiles inside the keys that every query of the tile sees need no mask.
        inner_start, inner_end = tile_kv_intersection(q0, q1, n_g, w, s, causal)
        full_lo = np.clip(-(-inner_start // tk), kv_lo, kv_hi)
        full_hi = np.clip(inner_end // tk, full_lo, kv_hi)
        ones = np.ones_like(q0)
        entries.append(
            np.stack(
                [g * ones, n_g * ones, q0, base * ones, kv_lo, kv_hi, full_lo, full_hi], axis=1
            )
        )
        base += 2 * n_g
    return AxisTiles(np.concatenate(entries).astype(np.int64), np.concatenate(windows))


def _trivial_axis() -> AxisTiles:
    """A padding axis of length 1: one token, one tile, always visible."""
    return AxisTiles(np.array([[0, 1, 0, 0, 0, 1, 0, 1]], np.int64), np.array([0, 1], np.int64))


@dataclass(frozen=True)
class LaunchPlan:
    """Everything the kernel launch needs besides the tensors (all tuples padded to 3 axes)."""

    q_tile: tuple[int, ...]  # per real axis, as chosen or given
    kv_tile: tuple[int, ...]
    spatial3: tuple[int, int, int]
    dilation3: tuple[int, int, int]
    q_tile3: tuple[int, int, int]
    kv_tile3: tuple[int, int, int]
    num_tiles: tuple[int, int, int]
    tile_order: tuple[int, int, int]  # axes of the Q-tile numbering, fastest first
    axis_offsets: tuple[int, int, int]
    tables: np.ndarray  # int32 [size]
    kv_tiles_visited: int  # total (Q tile, KV tile) pairs the kernel visits, per (batch, head)
    kv_tiles_masked: int  # of which need the fine-grained mask
    max_kv_tiles: int  # worst Q tile

    @property
    def q_tiles(self) -> int:
        return int(np.prod(self.num_tiles))

    @property
    def block_sparse(self) -> bool:
        """True when no visited KV tile needs the fine-grained mask."""
        return self.kv_tiles_masked == 0


def _check_tile(name: str, tile: tuple[int, ...], rank: int, total: int) -> tuple[int, ...]:
    tile = tuple(int(t) for t in tile)
    if len(tile) != rank:
        raise ValueError(f"{name} must have one entry per spatial axis ({rank}), got {tile}")
    if any(t < 1 or t & (t - 1) for t in tile):
        raise ValueError(f"{name} entries must be powers of two, got {tile}")
    if int(np.prod(tile)) != total:
        raise ValueError(f"{name} must hold exactly {total} tokens for this kernel, got {tile}")
    return tile


def tile_order(params: GNAParams) -> tuple[int, int, int]:
    """Axes (of the 3 kernel axes, leading padding first) in the order the kernel numbers a
    (batch, head)'s Q tiles, fastest first.

    The CTAs running at one time take consecutive Q tiles, and the K/V they read is a slab: the
    whole extent of the faster axes times the windows along the slowest. The slowest axis is
    therefore the one whose window covers the smallest fraction of its length (``kernel_size *
    dilation / n``), the fastest the largest; ties keep axis 2 fastest. HunyuanVideo's 30x48x80
    grid with window 18x24x24 is numbered axis 0 fastest and axis 2 slowest: in an LRU model of a
    25 MB L2 its K/V is read from DRAM 1.03 times instead of 4.6 times (axis 2 fastest).
    """
    pad = KERNEL_RANK - params.rank
    fraction = [1.0] * pad
    for a in range(params.rank):
        span = params.kernel_size[a] * params.dilation[a]
        fraction.append(min(1.0, span / params.spatial_shape[a]))
    return tuple(sorted(range(KERNEL_RANK), key=lambda a: (-fraction[a], -a)))


@functools.lru_cache(maxsize=256)
def make_plan(
    params: GNAParams, head_dim: int, q_tile: tuple[int, ...], kv_tile: tuple[int, ...]
) -> LaunchPlan:
    """Build the launch tables for ``params`` with the given (validated) tile shapes."""
    rank = params.rank
    q_tile = _check_tile("q_tile", q_tile, rank, Q_BLOCK)
    kv_tile = _check_tile("kv_tile", kv_tile, rank, kv_block(head_dim))
    pad = KERNEL_RANK - rank
    axes = [_trivial_axis() for _ in range(pad)]
    for a in range(rank):
        axes.append(
            axis_tiles(
                params.spatial_shape[a],
                params.kernel_size[a],
                params.stride[a],
                params.dilation[a],
                params.is_causal[a],
                q_tile[a],
                kv_tile[a],
            )
        )
    parts, offsets, pos = [], [], 0
    for ax in axes:
        entries = ax.entries.copy()
        win_start = pos + entries.size
        entries[:, 3] += win_start
        offsets.append(pos)
        parts += [entries.reshape(-1), ax.windows]
        pos = win_start + ax.windows.size
    tables = np.concatenate(parts)
    if tables.max(initial=0) >= 2**31:
        raise ValueError("launch table entries exceed int32")
    visited = int(np.prod([ax.kv_counts().sum() for ax in axes]))
    full = int(np.prod([ax.full_counts().sum() for ax in axes]))
    max_kv = int(np.prod([ax.kv_counts().max() for ax in axes]))
    one = (1,) * pad
    return LaunchPlan(
        q_tile=q_tile,
        kv_tile=kv_tile,
        spatial3=one + tuple(params.spatial_shape),
        dilation3=one + tuple(params.dilation),
        q_tile3=one + q_tile,
        kv_tile3=one + kv_tile,
        num_tiles=tuple(int(ax.entries.shape[0]) for ax in axes),
        tile_order=tile_order(params),
        axis_offsets=tuple(offsets),
        tables=tables.astype(np.int32),
        kv_tiles_visited=visited,
        kv_tiles_masked=visited - full,
        max_kv_tiles=max_kv,
    )


def _pow2_shapes(total: int, rank: int, limits: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Power-of-two shapes with ``prod == total``, no axis larger than its limit (pow2-ceiled)."""
    logs = range(total.bit_length())
    out = []
    for combo in itertools.product(logs, repeat=rank):
        shape = tuple(1 << c for c in combo)
        fits = all(t <= lim for t, lim in zip(shape, limits, strict=True))
        if fits and int(np.prod(shape)) == total:
            out.append(shape)
    return out


@functools.lru_cache(maxsize=256)
def choose_tiles(params: GNAParams, head_dim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Pick ``(q_tile, kv_tile)`` minimising the work the kernel does (visited token pairs).

    The static-tiling count of the simulator factorises over axes (a Q tile's KV box is a product
    of per-axis ranges), so each candidate pair of shapes is scored from per-axis sums; ties go to
    fewer masked tiles, then to equal Q and KV shapes.
    """
    rank = params.rank
    kvb = kv_block(head_dim)
    limits = []
    for a in range(rank):
        longest = int(group_lengths(params.spatial_shape[a], params.dilation[a]).max())
        limits.append(1 << max(longest - 1, 0).bit_length())
    # Axes too short for a full tile still need a valid shape: relax the limit on the last axis.
    q_shapes = _pow2_shapes(Q_BLOCK, rank, tuple(limits[:-1]) + (Q_BLOCK,))
    kv_shapes = _pow2_shapes(kvb, rank, tuple(limits[:-1]) + (kvb,))

    @functools.cache
    def per_axis(a: int, tq: int, tk: int) -> tuple[int, int]:
        ax = axis_tiles(
            params.spatial_shape[a],
            params.kernel_size[a],
            params.stride[a],
            params.dilation[a],
            params.is_causal[a],
            tq,
            tk,
        )
        return int(ax.kv_counts().sum()), int(ax.full_counts().sum())

    best, best_key = None, None
    for qs in q_shapes:
        for ks in kv_shapes:
            visited, full = 1, 1
            for a in range(rank):
                v, f = per_axis(a, qs[a], ks[a])
                visited *= v
                full *= f
            key = (visited, visited - full, qs != ks, tuple(-t for t in qs[::-1]))
            if best_key is None or key < best_key:
                best, best_key = (qs, ks), key
    assert best is not None
    return best
