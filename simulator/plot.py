"""Figures: heat map of KV tiles per Q tile and speedup bound vs stride (matplotlib, lazy)."""

from __future__ import annotations

import math

import numpy as np

from simulator.recommend import stride_sweep
from simulator.result import SimulationResult


def _require_matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'jax-gna-mace[plot]'") from None
    return Figure


def heatmap_image(result: SimulationResult) -> tuple[np.ndarray, str]:
    """2-D image of KV tiles per Q tile for dilation group 0, and a caption.

    1 axis: one row. 2 axes: the Q tile grid. 3 axes: a mosaic of the axis-0 slices (NaN gaps).
    """
    if result.raster is not None:
        return result.kv_tiles_per_q_tile[None, :].astype(float), "Q tile (raster order)"
    rank = result.params.rank
    counts = result.kv_tiles_per_q_tile[(0,) * rank].astype(float)
    counts[~result.q_tile_exists[(0,) * rank]] = np.nan
    if rank == 1:
        return counts[None, :], "Q tile"
    if rank == 2:
        return counts, "Q tile (axis 0 down, axis 1 across)"
    t0, t1, t2 = counts.shape
    cols = math.ceil(math.sqrt(t0 * t1 / t2)) if t0 > 1 else 1
    cols = max(1, min(t0, cols))
    rows = math.ceil(t0 / cols)
    image = np.full((rows * (t1 + 1) - 1, cols * (t2 + 1) - 1), np.nan)
    for k in range(t0):
        r, c = divmod(k, cols)
        image[r * (t1 + 1) : r * (t1 + 1) + t1, c * (t2 + 1) : c * (t2 + 1) + t2] = counts[k]
    return image, f"Q tile: {t0} axis-0 slices (row-major), each axis 1 down x axis 2 across"


def plot_result(result: SimulationResult, path: str, sweep: bool = True) -> None:
    """Save a figure to ``path``: the heat map and (``sweep``) the speedup-vs-stride chart."""
    Figure = _require_matplotlib()
    p = result.params
    fig = Figure(figsize=(12 if sweep else 6.5, 4.8), layout="constrained")
    axes = fig.subplots(1, 2 if sweep else 1, squeeze=False)[0]

    image, caption = heatmap_image(result)
    ax = axes[0]
    im = ax.imshow(image, cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="KV tiles visited")
    ax.set_title(
        f"{result.tiling} tiling, Q {_s(result.q_tile)} / KV {_s(result.kv_tile)}: "
        f"max {result.max_kv_tiles} of {result.total_kv_tiles}"
    )
    ax.set_xlabel(caption)
    ax.set_xticks([])
    ax.set_yticks([])

    if sweep:
        ax = axes[1]
        max_points = 6 if result.tiling == "1d" else None
        for a in range(p.rank):
            q = result.q_tile[0] if result.tiling == "1d" else result.q_tile
            kv = result.kv_tile[0] if result.tiling == "1d" else result.kv_tile
            strides, bounds, perfect = stride_sweep(
                p.spatial_shape,
                p.kernel_size,
                p.stride,
                p.dilation,
                p.is_causal,
                q,
                kv,
                result.tiling,
                axis=a,
                max_points=max_points,
            )
            (line,) = ax.plot(strides, bounds, marker="o", markersize=3, label=f"axis {a}")
            ax.plot(
                strides[perfect],
                bounds[perfect],
                linestyle="none",
                marker="s",
                markersize=7,
                markerfacecolor="none",
                color=line.get_color(),
            )
        ax.axhline(result.flop_bound, color="gray", linestyle="--", label="FLOP bound")
        ax.plot([], [], "ks", markerfacecolor="none", label="perfectly block-sparse")
        ax.set_xlabel("stride along one axis (others as given)")
        ax.set_ylabel("speedup bound")
        ax.set_title(f"grid {_s(p.spatial_shape)}, window {_s(p.kernel_size)}")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def _s(shape) -> str:
    return "x".join(str(v) for v in shape)
