"""The result object of :func:`simulator.simulate`: tile counts, bounds and KV boxes.

Reference point for every bound ("dense"): dense attention over the whole token grid with the
same Q and KV tile shapes, i.e. ``dense_q_tiles * dense_kv_tiles`` tile pairs, with
``dense_q_tiles = prod(ceil(n / q_tile))`` and ``dense_kv_tiles = prod(ceil(n / kv_tile))``
(``ceil(N / tile)`` for ``"1d"``). The sparse kernel runs ``num_q_tiles`` Q tiles (summed over the
dilation groups, each group tiled on its own grid) and, since the worst tile bounds the kernel,
costs at most ``num_q_tiles * max_kv_tiles`` tile pairs. Hence

    speedup_bound = dense_q_tiles * dense_kv_tiles / (num_q_tiles * max_kv_tiles)
    mean_bound    = dense_q_tiles * dense_kv_tiles / visited_tile_pairs

Without dilation ``num_q_tiles == dense_q_tiles`` and ``speedup_bound`` is the paper's
``total KV tiles / max over Q tiles``; with dilation the ratio of total tile-pair work stays the
honest comparison when the groups' grids have different sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator import geometry
from simulator.axis_tiling import AxisTiling
from simulator.geometry import GNAParams
from simulator.raster_tiling import RasterTiling


def amdahl(bound: float, attention_fraction: float, sparse_steps: int = 1, total_steps: int = 1):
    """End-to-end speedup bound: ``1 / ((1 - f') + f' / bound)`` with ``f' = f * m / M``.

    ``attention_fraction`` (``f``, in [0, 1]) is the share of runtime spent in self-attention;
    the sparse attention replaces it in ``sparse_steps`` (``m``) of ``total_steps`` (``M``) steps.
    """
    f = float(attention_fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"attention_fraction must be in [0, 1], got {attention_fraction!r}")
    for name, v in (("sparse_steps", sparse_steps), ("total_steps", total_steps)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= sparse_steps <= total_steps:
        raise ValueError(
            f"sparse_steps must be in [0, total_steps] = [0, {total_steps}], got {sparse_steps}"
        )
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound!r}")
    f_eff = f * sparse_steps / total_steps
    return 1.0 / ((1.0 - f_eff) + f_eff / bound)


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Tile-level cost of one GNA configuration under one tiling.

    Attributes:
      params: the validated GNA parameters (per-axis window, stride, dilation, causal).
      tiling: ``"static"``, ``"dynamic"`` or ``"1d"``.
      q_tile, kv_tile: tile shapes (tokens per axis; a 1-tuple of tokens for ``"1d"``).
    """

    params: GNAParams
    tiling: str
    q_tile: tuple[int, ...]
    kv_tile: tuple[int, ...]
    axes: tuple[AxisTiling, ...] | None = None
    raster: RasterTiling | None = None

    # ---------------------------------------------------------------- counts per Q tile

    @cached_property
    def kv_tiles_per_q_tile(self) -> np.ndarray:
        """Visited KV tiles of every Q tile (int64).

        ``"static"`` / ``"dynamic"``: shape ``[*dilation, *q_tiles]``, the leading axes index the
        dilation group (phase per axis), the trailing ones the Q tile on that group's grid
        (``q_tiles[a] = ceil(ceil(n_a / d_a) / q_tile[a])``; tiles a shorter group lacks hold 0,
        see :attr:`q_tile_exists`). ``"1d"``: shape ``[ceil(N / q_tile)]``.
        """
        if self.raster is not None:
            return self.raster.count
        return self._outer([ax.count for ax in self.axes], np.multiply)

    @cached_property
    def q_tile_exists(self) -> np.ndarray:
        """Bool, same shape as :attr:`kv_tiles_per_q_tile`: whether that Q tile exists."""
        if self.raster is not None:
            return np.ones(self.raster.num_q_tiles, dtype=bool)
        return self._outer([ax.exists for ax in self.axes], np.logical_and)

    def _outer(self, per_axis: list[np.ndarray], op) -> np.ndarray:
        r = len(per_axis)
        out = np.ones((1,) * (2 * r), dtype=per_axis[0].dtype)
        for a, arr in enumerate(per_axis):
            shape = [1] * (2 * r)
            shape[a], shape[r + a] = arr.shape
            out = op(out, arr.reshape(shape))
        return out

    # ---------------------------------------------------------------- totals

    @property
    def num_q_tiles(self) -> int:
        """Q tiles the sparse kernel runs (summed over the dilation groups)."""
        if self.raster is not None:
            return self.raster.num_q_tiles
        return math.prod(ax.num_q_tiles for ax in self.axes)

    @property
    def dense_q_tiles(self) -> int:
        """Q tiles of dense attention over the whole grid with the same Q tile shape."""
        if self.raster is not None:
            return self.raster.num_q_tiles
        return math.prod(ax.dense_q_tiles for ax in self.axes)

    @property
    def total_kv_tiles(self) -> int:
        """KV tiles dense attention visits per Q tile (whole grid, same KV tile shape)."""
        if self.raster is not None:
            return self.raster.num_kv_tiles
        return math.prod(ax.dense_kv_tiles for ax in self.axes)

    @property
    def dense_tile_pairs(self) -> int:
        return self.dense_q_tiles * self.total_kv_tiles

    @property
    def max_kv_tiles(self) -> int:
        """KV tiles visited by the worst Q tile."""
        if self.raster is not None:
            return int(self.raster.count.max())
        return math.prod(ax.max_count for ax in self.axes)

    @property
    def visited_tile_pairs(self) -> int:
        """(Q tile, KV tile) pairs the sparse kernel visits in total."""
        if self.raster is not None:
            return int(self.raster.count.sum())
        return math.prod(ax.sum_count for ax in self.axes)

    @property
    def mean_kv_tiles(self) -> float:
        return self.visited_tile_pairs / self.num_q_tiles

    # ---------------------------------------------------------------- bounds

    @property
    def speedup_bound(self) -> float:
        """Dense tile pairs / (Q tiles * worst Q tile's KV tiles): the kernel-level upper bound."""
        return self.dense_tile_pairs / (self.num_q_tiles * self.max_kv_tiles)

    @property
    def mean_bound(self) -> float:
        """Dense tile pairs / visited tile pairs (as if every Q tile cost the mean)."""
        return self.dense_tile_pairs / self.visited_tile_pairs

    @property
    def flop_bound(self) -> float:
        """The FLOP-wise bound ``prod(n) / prod(w)`` (ignores causal truncation of windows)."""
        return math.prod(self.params.spatial_shape) / math.prod(self.params.kernel_size)

    @property
    def exact_flop_bound(self) -> float:
        """``N**2 / (sum over queries of visible keys)``: the FLOP ratio including causal edges."""
        p = self.params
        visible = 1
        for a in range(p.rank):
            n, d = p.spatial_shape[a], p.dilation[a]
            i = np.arange(n, dtype=np.int64)
            n_g = geometry.group_lengths(n, d)[i % d]
            start, end = geometry.window(i // d, n_g, p.kernel_size[a], p.stride[a], p.is_causal[a])
            visible *= int((end - start).sum())
        return math.prod(p.spatial_shape) ** 2 / visible

    @property
    def perfectly_block_sparse(self) -> bool:
        """Every visited (Q tile, KV tile) pair is unmasked on all its real entries.

        Real entries are the in-grid tokens of the tile pair (of the Q tile's dilation group for
        the multi-dimensional tilings); keys past the grid edge, which the padding mask removes,
        do not count. When True a kernel needs no fine-grained GNA mask, only the padding mask.
        """
        if self.raster is not None:
            return self.raster.perfect
        return all(ax.perfect for ax in self.axes)

    def end_to_end(
        self, attention_fraction: float, sparse_steps: int = 1, total_steps: int = 1
    ) -> float:
        """Amdahl end-to-end bound from :attr:`speedup_bound` (see :func:`amdahl`)."""
        return amdahl(self.speedup_bound, attention_fraction, sparse_steps, total_steps)

    # ---------------------------------------------------------------- tile lists and boxes

    def visited_kv_tiles(self, q_tile, group=None) -> np.ndarray:
        """Origins of the KV tiles one Q tile visits, ``[count, rank]`` int64 (``[count, 1]``
        for ``"1d"``), in the order a kernel would walk them (raster order of the KV box).

        ``q_tile``: the Q tile's index per axis on its group's grid (an int for ``"1d"``).
        ``group``: the dilation phase per axis (default all 0; not used for ``"1d"``).
        Origins are the first token of each KV tile per axis, in in-group coordinates (grid
        coordinate ``phase + dilation * origin``); static origins are multiples of ``kv_tile``,
        ``"1d"`` origins are raster offsets (``tile index * kv_tile``).
        """
        if self.raster is not None:
            t = _index("q_tile", q_tile, 1, (self.raster.num_q_tiles,))[0]
            return (self.raster.visited(t) * self.raster.kv_tile)[:, None]
        rank = self.params.rank
        g = (0,) * rank if group is None else _index("group", group, rank, self.params.dilation)
        t = _index("q_tile", q_tile, rank, tuple(ax.exists.shape[1] for ax in self.axes))
        if not all(ax.exists[g[a], t[a]] for a, ax in enumerate(self.axes)):
            raise ValueError(f"q_tile {t} does not exist in dilation group {g}")
        per_axis = [ax.tile_origins(g[a], t[a]) for a, ax in enumerate(self.axes)]
        grids = np.meshgrid(*per_axis, indexing="ij")
        return np.stack([x.ravel() for x in grids], axis=1)

    def _axis(self, axis: int, what: str) -> AxisTiling:
        if self.axes is None:
            raise ValueError(f"{what} is per axis and needs tiling 'static' or 'dynamic', not '1d'")
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"axis must be an int, got {axis!r}")
        if not 0 <= axis < self.params.rank:
            raise ValueError(f"axis must be in [0, {self.params.rank}), got {axis}")
        return self.axes[axis]

    def kv_box(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Union of the key windows of each Q tile along ``axis``: ``(start, end)`` in in-group
        tokens, each ``[dilation[axis], q_tiles[axis]]`` (0 for tiles a group lacks)."""
        ax = self._axis(axis, "kv_box")
        return ax.box_start, ax.box_end

    def kv_tiles_per_axis(self, axis: int) -> np.ndarray:
        """``[dilation[axis], q_tiles[axis]]`` visited KV tiles along ``axis``; the count of a Q
        tile is the product of its per-axis counts."""
        return self._axis(axis, "kv_tiles_per_axis").count

    def kv_box_tiles(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Static tiling only: ``(first KV tile index, number of KV tiles)`` of each Q tile's box
        along ``axis`` on its group's KV tile grid, each ``[dilation[axis], q_tiles[axis]]``.
        This is what a token-permuted kernel's KV loop needs."""
        ax = self._axis(axis, "kv_box_tiles")
        if ax.mode != "static":
            raise ValueError(
                "kv_box_tiles needs tiling 'static' (dynamic KV tiles are not on a grid); "
                "use kv_box for the token range"
            )
        return ax.first_tile, ax.count

    # ---------------------------------------------------------------- reporting

    def summary(self) -> dict:
        """Plain-Python summary (JSON-serialisable) of the configuration and its bounds."""
        p = self.params
        return {
            "input_shape": list(p.spatial_shape),
            "window": list(p.kernel_size),
            "stride": list(p.stride),
            "dilation": list(p.dilation),
            "causal": list(p.is_causal),
            "tiling": self.tiling,
            "q_tile": list(self.q_tile),
            "kv_tile": list(self.kv_tile),
            "num_q_tiles": self.num_q_tiles,
            "total_kv_tiles": self.total_kv_tiles,
            "max_kv_tiles": self.max_kv_tiles,
            "mean_kv_tiles": self.mean_kv_tiles,
            "speedup_bound": self.speedup_bound,
            "mean_bound": self.mean_bound,
            "flop_bound": self.flop_bound,
            "exact_flop_bound": self.exact_flop_bound,
            "perfectly_block_sparse": self.perfectly_block_sparse,
        }


def _index(name: str, value, rank: int, limits: tuple[int, ...]) -> tuple[int, ...]:
    """Validate a per-axis index (an int broadcasts only when ``rank == 1``)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and rank == 1:
        value = (value,)
    try:
        idx = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of {rank} ints, got {value!r}") from None
    if len(idx) != rank or any(
        isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in idx
    ):
        raise ValueError(f"{name} must be a tuple of {rank} ints, got {value!r}")
    for a, (i, lim) in enumerate(zip(idx, limits, strict=True)):
        if not 0 <= i < lim:
            raise ValueError(f"{name}[{a}] must be in [0, {lim}), got {i}")
    return tuple(int(i) for i in idx)
