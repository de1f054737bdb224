"""Search strides, windows near the requested one, and tile shapes; rank them by speedup bound.

The multi-dimensional tilings factorise over the axes (see :mod:`simulator.axis_tiling`): the
speedup bound of a configuration is the product of per-axis factors
``ceil(n/q) * ceil(n/kv) / (q_tiles * max count)`` and it is perfectly block-sparse iff every axis
is. So each axis is searched on its own and the best products are assembled at the end; the
search is exact for the ranking by bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from simulator import geometry
from simulator.axis_tiling import tile_axis
from simulator.engine import DEFAULT_TILES, simulate, validate_input_shape


@dataclass(frozen=True)
class Recommendation:
    """One ranked configuration (per-axis tuples)."""

    window: tuple[int, ...]
    stride: tuple[int, ...]
    q_tile: tuple[int, ...]
    kv_tile: tuple[int, ...]
    speedup_bound: float
    mean_bound: float
    flop_bound: float
    perfectly_block_sparse: bool

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _per_axis_ints(name: str, value, rank: int) -> list[list[int]]:
    """``None`` -> ``[None] * rank``; a list of ints -> the same list for every axis; a list of
    ``rank`` lists -> one list per axis."""
    if value is None:
        return [None] * rank
    values = list(value)
    if values and all(isinstance(v, (list, tuple)) for v in values):
        if len(values) != rank:
            raise ValueError(f"{name} must hold one list per spatial axis ({rank}), got {value!r}")
        lists = [list(v) for v in values]
    else:
        lists = [values] * rank
    for lst in lists:
        if not lst or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in lst):
            raise ValueError(f"{name} must be non-empty lists of ints, got {value!r}")
    return [[int(v) for v in lst] for lst in lists]


def _tile_list(name: str, tiles, rank: int) -> list[tuple[int, ...]]:
    if tiles is None:
        return [DEFAULT_TILES[rank]]
    if isinstance(tiles, (int, np.integer)) or (
        isinstance(tiles, (tuple, list)) and tiles and isinstance(tiles[0], (int, np.integer))
    ):
        raise ValueError(f"{name} must be a list of tile shapes, e.g. [(2, 8, 8)], got {tiles!r}")
    out = [geometry.validate_tile_shape(name, t, rank) for t in tiles]
    if not out:
        raise ValueError(f"{name} must hold at least one tile shape")
    return out


def recommend(
    input_shape: Sequence[int],
    window: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
    causal: bool | Sequence[bool] = False,
    *,
    q_tiles: Sequence[Sequence[int]] | None = None,
    kv_tiles: Sequence[Sequence[int]] | None = None,
    tiling: str = "static",
    strides: Sequence[int] | Sequence[Sequence[int]] | None = None,
    window_slack: int | Sequence[int] = 0,
    top: int = 10,
    perfect_only: bool = False,
) -> list[Recommendation]:
    """Rank GNA configurations near ``window`` by :attr:`SimulationResult.speedup_bound`.

    Searches every stride in ``[1, w']`` (or the given ``strides``: one list for all axes or one
    list per axis), every window ``w'`` within ``window_slack`` of ``window`` per axis (that
    passes validation), and every ``(q_tile, kv_tile)`` pair of the given lists (default: NATTEN's
    Hopper shape for the rank). Ranking: bound (descending), then perfectly block-sparse first,
    then the window closest to the requested one, then the smallest strides (sum, then
    lexicographic).

    Only the multi-dimensional tilings (``"static"``, ``"dynamic"``) are searched.
    Returns at most ``top`` :class:`Recommendation` objects (only perfectly block-sparse ones
    when ``perfect_only``).
    """
    if tiling not in ("static", "dynamic"):
        raise ValueError(f"tiling must be 'static' or 'dynamic' for recommend, got {tiling!r}")
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be an int >= 1, got {top!r}")
    base = geometry.make_params(validate_input_shape(input_shape), window, 1, dilation, causal)
    rank = base.rank
    slack = geometry._broadcast("window_slack", window_slack, rank, int)
    if any(x < 0 for x in slack):
        raise ValueError(f"window_slack must be >= 0 on every axis, got {slack}")
    stride_lists = _per_axis_ints("strides", strides, rank)
    pairs = [
        (q, kv)
        for q in _tile_list("q_tiles", q_tiles, rank)
        for kv in _tile_list("kv_tiles", kv_tiles, rank)
    ]

    found: list[tuple[tuple, Recommendation]] = []
    for q, kv in pairs:
        axes = [
            _axis_candidates(base, a, slack[a], stride_lists[a], q[a], kv[a], tiling, perfect_only)
            for a in range(rank)
        ]
        if any(c["factor"].size == 0 for c in axes):
            continue
        axes = [_prune(c, top) for c in axes]
        grids = np.meshgrid(*[np.arange(c["factor"].size) for c in axes], indexing="ij")
        idx = [g.ravel() for g in grids]
        dense, worst, visited = (
            np.prod([c[key][i] for c, i in zip(axes, idx, strict=True)], axis=0)
            for key in ("dense", "worst", "visited")
        )
        bound, mean = dense / worst, dense / visited
        perfect = np.all([c["perfect"][i] for c, i in zip(axes, idx, strict=True)], axis=0)
        w = np.stack([c["w"][i] for c, i in zip(axes, idx, strict=True)], axis=1)
        s = np.stack([c["s"][i] for c, i in zip(axes, idx, strict=True)], axis=1)
        distance = np.abs(w - np.asarray(base.kernel_size)).sum(1)
        rounded = np.round(bound, 9)
        # np.lexsort: last key is primary.
        keys = [s[:, a] for a in reversed(range(rank))]
        keys += [s.sum(1), distance, ~perfect, -rounded]
        for k in np.lexsort(keys)[:top]:
            wk, sk = tuple(int(x) for x in w[k]), tuple(int(x) for x in s[k])
            rec = Recommendation(
                window=wk,
                stride=sk,
                q_tile=q,
                kv_tile=kv,
                speedup_bound=float(bound[k]),
                mean_bound=float(mean[k]),
                flop_bound=math.prod(base.spatial_shape) / math.prod(wk),
                perfectly_block_sparse=bool(perfect[k]),
            )
            key = (-rounded[k], not perfect[k], int(distance[k]), sum(sk), sk)
            found.append((key, rec))
    found.sort(key=lambda item: item[0])
    return [rec for _, rec in found[:top]]


def _axis_candidates(base, a, slack, strides, q, kv, tiling, perfect_only) -> dict:
    """Per-axis factors of every (window, stride) candidate of axis ``a``."""
    n, w0, d, c = base.spatial_shape[a], base.kernel_size[a], base.dilation[a], base.is_causal[a]
    rows = []
    for w in range(max(2, w0 - slack), min(n // d, w0 + slack) + 1):
        for s in range(1, w + 1) if strides is None else sorted({x for x in strides if x <= w}):
            if s < 1:
                continue
            ax = tile_axis(n, w, s, d, c, q, kv, tiling)
            if perfect_only and not ax.perfect:
                continue
            dense = ax.dense_q_tiles * ax.dense_kv_tiles
            worst = ax.num_q_tiles * ax.max_count
            rows.append((w, s, dense, worst, ax.sum_count, dense / worst, ax.perfect))
    names = ("w", "s", "dense", "worst", "visited", "factor", "perfect")
    types = (np.int64, np.int64, np.int64, np.int64, np.int64, float, bool)
    cols = list(zip(*rows, strict=True)) if rows else [[]] * len(names)
    return {k: np.asarray(v, dtype=t) for k, v, t in zip(names, cols, types, strict=True)}


def _prune(cands: dict, top: int) -> dict:
    """Keep the candidates whose factor is at least the ``top``-th best (ties kept): any product
    using a worse factor on this axis has ``top`` strictly better products ahead of it."""
    f = cands["factor"]
    if f.size <= top:
        return cands
    threshold = np.sort(f)[::-1][top - 1] * (1 - 1e-12)
    keep = f >= threshold
    return {k: v[keep] for k, v in cands.items()}


def stride_sweep(
    input_shape: Sequence[int],
    window,
    stride,
    dilation=1,
    causal=False,
    q_tile=None,
    kv_tile=None,
    tiling: str = "static",
    axis: int = 0,
    max_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Speedup bound as the stride along ``axis`` varies over ``[1, window]`` (other axes fixed).

    Returns ``(strides, speedup_bounds, perfectly_block_sparse)``; ``max_points`` subsamples the
    strides (useful for the slower ``"1d"`` tiling).
    """
    params = geometry.make_params(
        validate_input_shape(input_shape), window, stride, dilation, causal
    )
    w = params.kernel_size[axis]
    strides = np.arange(1, w + 1)
    if max_points is not None and strides.size > max_points:
        strides = np.unique(np.round(np.geomspace(1, w, max_points)).astype(np.int64))
    bounds, perfect = [], []
    for s in strides:
        st = list(params.stride)
        st[axis] = int(s)
        r = simulate(
            params.spatial_shape,
            params.kernel_size,
            st,
            params.dilation,
            params.is_causal,
            q_tile,
            kv_tile,
            tiling,
        )
        bounds.append(r.speedup_bound)
        perfect.append(r.perfectly_block_sparse)
    return strides, np.asarray(bounds), np.asarray(perfect, dtype=bool)
