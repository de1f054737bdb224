"""``simulate``: validate a GNA configuration and run the tile analysis of one tiling mode."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simulator import geometry
from simulator.axis_tiling import tile_axis
from simulator.raster_tiling import tile_raster
from simulator.result import SimulationResult

TILINGS = ("static", "dynamic", "1d")

# NATTEN's Hopper tile shapes for head_dim 128, used when no tile shape is given.
DEFAULT_TILES: dict[int, tuple[int, ...]] = {1: (128,), 2: (16, 8), 3: (4, 4, 8)}
DEFAULT_1D_TILE = 128


def validate_tiling(tiling: str) -> str:
    if tiling not in TILINGS:
        raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
    return tiling


def validate_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """``input_shape`` must be a sequence of ints (rank and sizes are checked by make_params)."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) for n in shape):
        raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}")
    return tuple(int(n) for n in shape)


def resolve_tiles(
    rank: int, tiling: str, q_tile, kv_tile
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate (or default) the Q / KV tile shapes: one positive int per axis, or a single
    positive int (tokens) for ``"1d"``."""
    if tiling == "1d":
        q = DEFAULT_1D_TILE if q_tile is None else q_tile
        kv = DEFAULT_1D_TILE if kv_tile is None else kv_tile
        out = []
        for name, t in (("q_tile", q), ("kv_tile", kv)):
            if isinstance(t, (tuple, list)) and len(t) != 1:
                raise ValueError(
                    f"{name} must be one positive int (tokens per tile) for tiling '1d', got {t!r}"
                )
            out.append(geometry.validate_tile_shape(name, t, 1))
        return out[0], out[1]
    q = DEFAULT_TILES[rank] if q_tile is None else q_tile
    kv = DEFAULT_TILES[rank] if kv_tile is None else kv_tile
    return (
        geometry.validate_tile_shape("q_tile", q, rank),
        geometry.validate_tile_shape("kv_tile", kv, rank),
    )


def simulate(
    input_shape: Sequence[int],
    window: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    causal: bool | Sequence[bool] = False,
    q_tile: int | Sequence[int] | None = None,
    kv_tile: int | Sequence[int] | None = None,
    tiling: str = "static",
) -> SimulationResult:
    """Count the KV tiles every Q tile of a GNA kernel must visit, and derive speedup bounds.

    Args:
      input_shape: token grid ``(n_0, ..., n_{r-1})``, 1 to 3 axes.
      window: neighbourhood size per axis (``kernel_size`` in :mod:`jax_gna` and in the error
        messages); an int broadcasts.
      stride, dilation, causal: per axis, ints / bools broadcast. Validation (shared with
        :mod:`jax_gna`): ``window >= 2``, ``stride >= 1``, ``dilation >= 1``,
        ``window * dilation <= n``, ``stride <= window``.
      q_tile, kv_tile: tile shape in tokens per axis (``"static"`` / ``"dynamic"``; default
        NATTEN's Hopper shapes ``(128,)``, ``(16, 8)``, ``(4, 4, 8)``) or tokens per tile
        (``"1d"``; default 128).
      tiling: ``"static"`` (multi-dimensional tiles, KV tiles on a fixed grid: a token-permuted
        kernel), ``"dynamic"`` (KV tiles cut from each Q tile's own box), ``"1d"`` (plain FMHA
        over the flattened raster order with a block-sparse mask).

    Returns:
      A :class:`SimulationResult`.

    Raises:
      ValueError: naming the argument and the rule it broke.
    """
    validate_tiling(tiling)
    params = geometry.make_params(
        validate_input_shape(input_shape), window, stride, dilation, causal
    )
    q, kv = resolve_tiles(params.rank, tiling, q_tile, kv_tile)
    if tiling == "1d":
        return SimulationResult(params, tiling, q, kv, raster=tile_raster(params, q[0], kv[0]))
    axes = tuple(
        tile_axis(
            params.spatial_shape[a],
            params.kernel_size[a],
            params.stride[a],
            params.dilation[a],
            params.is_causal[a],
            q[a],
            kv[a],
            tiling,
        )
        for a in range(params.rank)
    )
    return SimulationResult(params, tiling, q, kv, axes=axes)
