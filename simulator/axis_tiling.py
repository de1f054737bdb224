"""Per-axis analysis of multi-dimensional ("static" / "dynamic") tilings.

A multi-dimensional tiling factorises over the spatial axes: a Q tile is a product of per-axis
query runs, its KV box is the product of the per-axis unions of windows, and the dilation groups
are the product of per-axis phases. So every quantity the simulator reports for these tilings is
a product (or a conjunction) of per-axis quantities, which this module computes for one axis.

Arrays are indexed ``[phase, q_tile]``: ``phase`` in ``range(d)`` is the dilation group along the
axis, ``q_tile`` the Q tile index on that group's grid (``ceil(n_g / q_tile)`` tiles; shorter
groups are padded with non-existent tiles, ``exists == False``, count 0). All token indices are
in-group indices (token ``j`` of phase ``g`` is grid coordinate ``g + d * j``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator import geometry

TILINGS_PER_AXIS = ("static", "dynamic")


def ceil_div(a, b):
    """Integer ``ceil(a / b)`` for non-negative ``a`` and positive ``b`` (vectorised)."""
    return -(-np.asarray(a, dtype=np.int64) // b)


@dataclass(frozen=True)
class AxisTiling:
    """Tiling of one spatial axis (all dilation phases).

    Attributes (``d`` = dilation, ``T`` = max Q tiles of a phase):
      n, w, s, d, causal: the axis' size, window, stride, dilation and causal flag.
      q_tile, kv_tile: tile lengths (tokens) along this axis.
      mode: ``"static"`` (KV tiles on the phase's fixed grid) or ``"dynamic"`` (KV tiles cut
        from each Q tile's own box start).
      group_length: ``[d]`` tokens per phase.
      exists: ``[d, T]`` whether the Q tile exists (shorter phases have one tile fewer).
      box_start, box_end: ``[d, T]`` union of the Q tile's key windows, ``[start, end)``.
      tiles_start, tiles_end: ``[d, T]`` tokens covered by the visited KV tiles, clipped to the
        phase (``tiles_start`` is the first visited tile's origin).
      count: ``[d, T]`` visited KV tiles along this axis (0 for non-existent tiles).
      full: ``[d, T]`` every real (query, key) entry of every visited tile pair is unmasked along
        this axis (True for non-existent tiles).
    """

    n: int
    w: int
    s: int
    d: int
    causal: bool
    q_tile: int
    kv_tile: int
    mode: str
    group_length: np.ndarray
    exists: np.ndarray
    box_start: np.ndarray
    box_end: np.ndarray
    tiles_start: np.ndarray
    tiles_end: np.ndarray
    count: np.ndarray
    full: np.ndarray

    @property
    def num_q_tiles(self) -> int:
        """Real Q tiles along this axis, summed over the dilation phases."""
        return int(self.exists.sum())

    @property
    def max_count(self) -> int:
        return int(self.count.max())

    @property
    def sum_count(self) -> int:
        return int(self.count.sum())

    @property
    def dense_q_tiles(self) -> int:
        """Q tiles of dense attention over the whole (undilated) axis: ``ceil(n / q_tile)``."""
        return int(ceil_div(self.n, self.q_tile))

    @property
    def dense_kv_tiles(self) -> int:
        """KV tiles of dense attention over the whole (undilated) axis: ``ceil(n / kv_tile)``."""
        return int(ceil_div(self.n, self.kv_tile))

    @property
    def perfect(self) -> bool:
        return bool(self.full.all())

    @property
    def first_tile(self) -> np.ndarray:
        """``[d, T]`` static KV grid index of the first visited tile: ``tiles_start // kv_tile``."""
        return self.tiles_start // self.kv_tile

    def tile_origins(self, phase: int, q_tile: int) -> np.ndarray:
        """``[count]`` in-group origin (first token) of each KV tile visited by one Q tile."""
        c = int(self.count[phase, q_tile])
        return self.tiles_start[phase, q_tile] + self.kv_tile * np.arange(c, dtype=np.int64)


def tile_axis(
    n: int, w: int, s: int, d: int, causal: bool, q_tile: int, kv_tile: int, mode: str
) -> AxisTiling:
    """Analyse one axis of a static or dynamic multi-dimensional tiling (vectorised)."""
    if mode not in TILINGS_PER_AXIS:
        raise ValueError(f"mode must be one of {TILINGS_PER_AXIS}, got {mode!r}")
    n_g = geometry.group_lengths(n, d)[:, None]  # [d, 1]
    tiles = ceil_div(n_g, q_tile)  # [d, 1]
    t = np.arange(int(tiles.max()), dtype=np.int64)[None, :]  # [1, T]
    exists = t < tiles
    # Real queries of each tile; non-existent tiles are clamped onto the last query (masked later).
    q0 = np.minimum(t * q_tile, n_g - 1)
    q1 = np.maximum(np.minimum((t + 1) * q_tile, n_g), q0 + 1)
    box_start, box_end = geometry.tile_kv_box(q0, q1, n_g, w, s, causal)
    in_start, in_end = geometry.tile_kv_intersection(q0, q1, n_g, w, s, causal)
    if mode == "static":
        first = box_start // kv_tile
        count = ceil_div(box_end, kv_tile) - first
        tiles_start = first * kv_tile
    else:
        count = ceil_div(box_end - box_start, kv_tile)
        tiles_start = box_start
    tiles_end = np.minimum(tiles_start + count * kv_tile, n_g)
    full = (in_start <= tiles_start) & (in_end >= tiles_end)
    zero = np.zeros_like(count)
    return AxisTiling(
        n=n,
        w=w,
        s=s,
        d=d,
        causal=causal,
        q_tile=q_tile,
        kv_tile=kv_tile,
        mode=mode,
        group_length=n_g[:, 0],
        exists=exists & np.ones_like(n_g, dtype=bool),
        box_start=np.where(exists, box_start, zero),
        box_end=np.where(exists, box_end, zero),
        tiles_start=np.where(exists, tiles_start, zero),
        tiles_end=np.where(exists, tiles_end, zero),
        count=np.where(exists, count, zero),
        full=full | ~exists,
    )
