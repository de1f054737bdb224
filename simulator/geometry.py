"""Neighborhood geometry of Generalized Neighborhood Attention (GNA), NumPy only.

This module is the single implementation of the GNA window formulas. It is shared by the
simulator (tile counting), the pure-JAX reference in :mod:`jax_gna` (masks and KV boxes) and the
host-side launch logic of the CUDA kernel, so the three can never drift apart.

Conventions (per spatial axis of length ``n``):

* ``w`` (kernel size / window), ``s`` (stride), ``d`` (dilation), ``causal`` flag.
* Dilation splits the axis into ``d`` groups: token ``i`` is in group ``g = i % d`` at in-group
  index ``j = i // d``; group ``g`` has ``ceil((n - g) / d)`` tokens. Only tokens of the same group
  see each other, and all window rules act on in-group indices.
* Windows are half-open ``[start, end)`` in in-group indices.

All functions accept Python ints or integer NumPy arrays (vectorised) for the index arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IntOrSeq = int | Sequence[int]
BoolOrSeq = bool | Sequence[bool]


# --------------------------------------------------------------------------------------------
# Parameter normalisation and validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GNAParams:
    """Per-axis GNA parameters, already broadcast to the rank of the token grid."""

    spatial_shape: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    is_causal: tuple[bool, ...]

    @property
    def rank(self) -> int:
        return len(self.spatial_shape)

    def axes(self) -> tuple[tuple[int, int, int, int, bool], ...]:
        """Per axis ``(size, kernel_size, stride, dilation, is_causal)``."""
        return tuple(
            zip(
                self.spatial_shape,
                self.kernel_size,
                self.stride,
                self.dilation,
                self.is_causal,
                strict=True,
            )
        )

    def group_lengths(self, axis: int) -> np.ndarray:
        """Lengths of the ``dilation[axis]`` dilation groups along ``axis``: ``[d]`` int64."""
        n, d = self.spatial_shape[axis], self.dilation[axis]
        return group_lengths(n, d)


def _broadcast(name: str, value, rank: int, kind: type) -> tuple:
    if isinstance(value, (bool, np.bool_)) and kind is int:
        raise ValueError(f"{name} must be an int or a tuple of {rank} ints, got {value!r}")
    if isinstance(value, (int, np.integer, bool, np.bool_)):
        return tuple(kind(value) for _ in range(rank))
    try:
        values = tuple(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a {kind.__name__} or a tuple of {rank} {kind.__name__}s, got {value!r}"
        ) from None
    if len(values) != rank:
        raise ValueError(
            f"{name} must have one entry per spatial axis ({rank}), got {len(values)}: {value!r}"
        )
    out = []
    for v in values:
        if kind is int and (
            isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
        ):
            raise ValueError(f"{name} entries must be ints, got {value!r}")
        if kind is bool and not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{name} entries must be bools, got {value!r}")
        out.append(kind(v))
    return tuple(out)


def make_params(
    spatial_shape: Sequence[int],
    kernel_size: IntOrSeq,
    stride: IntOrSeq = 1,
    dilation: IntOrSeq = 1,
    is_causal: BoolOrSeq = False,
) -> GNAParams:
    """Broadcast and validate GNA parameters for a token grid of shape ``spatial_shape``.

    Raises ``ValueError`` naming the argument and the rule it broke:
    ``kernel_size >= 2``, ``stride >= 1``, ``dilation >= 1``, ``kernel_size * dilation <= size``,
    ``stride <= kernel_size``; ints broadcast to every axis, tuples need one entry per axis.
    """
    shape = tuple(int(n) for n in spatial_shape)
    rank = len(shape)
    if rank not in (1, 2, 3):
        raise ValueError(f"the token grid must have 1, 2 or 3 spatial axes, got {rank}: {shape}")
    if any(n < 1 for n in shape):
        raise ValueError(f"spatial sizes must be >= 1, got {shape}")
    w = _broadcast("kernel_size", kernel_size, rank, int)
    s = _broadcast("stride", stride, rank, int)
    d = _broadcast("dilation", dilation, rank, int)
    c = _broadcast("is_causal", is_causal, rank, bool)
    for ax in range(rank):
        if w[ax] < 2:
            raise ValueError(f"kernel_size must be >= 2 on every axis, got {w} (axis {ax})")
        if s[ax] < 1:
            raise ValueError(f"stride must be >= 1 on every axis, got {s} (axis {ax})")
        if d[ax] < 1:
            raise ValueError(f"dilation must be >= 1 on every axis, got {d} (axis {ax})")
        if w[ax] * d[ax] > shape[ax]:
            raise ValueError(
                f"kernel_size * dilation must be <= the spatial size on every axis: axis {ax} has "
                f"kernel_size {w[ax]} * dilation {d[ax]} = {w[ax] * d[ax]} > size {shape[ax]}"
            )
        if s[ax] > w[ax]:
            raise ValueError(
                f"stride must be <= kernel_size on every axis: axis {ax} has stride {s[ax]} > "
                f"kernel_size {w[ax]}"
            )
    return GNAParams(shape, w, s, d, c)


def validate_tile_shape(name: str, tile: IntOrSeq, rank: int) -> tuple[int, ...]:
    """Broadcast a tile shape to ``rank`` axes; every entry must be a positive int."""
    t = _broadcast(name, tile, rank, int)
    if any(x < 1 for x in t):
        raise ValueError(f"{name} entries must be positive, got {t}")
    return t


# --------------------------------------------------------------------------------------------
# Window formulas (in-group indices)
# --------------------------------------------------------------------------------------------


def group_lengths(n: int, d: int) -> np.ndarray:
    """``[d]`` int64: number of tokens of each dilation group, ``ceil((n - g) / d)``."""
    g = np.arange(d, dtype=np.int64)
    return (n - g + d - 1) // d


def window_halves(w: int) -> tuple[int, int]:
    """Left and right half-widths: even windows have one more key on the left."""
    return w // 2, w // 2 + (w % 2) - 1


def stride_leader(j, n_g, s: int, causal: bool):
    """Index of the stride-group leader whose window query ``j`` uses."""
    j = np.asarray(j, dtype=np.int64)
    if causal:
        leader = (j // s) * s + s - 1
    else:
        leader = (j // s) * s + s // 2
    return np.minimum(leader, np.asarray(n_g, dtype=np.int64) - 1)


def window(j, n_g, w: int, s: int, causal: bool):
    """Half-open key window ``[start, end)`` of in-group query ``j`` in a group of length ``n_g``.

    Non-causal windows hold exactly ``w`` keys (shifted to stay inside the group); causal
    windows end at the query itself and hold at most ``w`` keys.
    """
    j = np.asarray(j, dtype=np.int64)
    n_g = np.asarray(n_g, dtype=np.int64)
    leader = stride_leader(j, n_g, s, causal)
    if causal:
        start = np.maximum(leader - w + 1, 0)
        end = np.minimum(j + 1, n_g)
    else:
        wl, _ = window_halves(w)
        start = np.clip(leader - wl, 0, np.maximum(n_g - w, 0))
        end = start + w
    return start, end


def inverse_window(k, n_g, w: int, s: int, causal: bool):
    """Half-open range ``[q_start, q_end)`` of the in-group queries whose window holds key ``k``."""
    k = np.asarray(k, dtype=np.int64)
    n_g = np.asarray(n_g, dtype=np.int64)
    wl, wr = window_halves(w)
    off = s - s // 2 - 1
    if causal:
        q_start = k
        extra = (k + w >= n_g).astype(np.int64)
        q_end = np.minimum(n_g, s * ((k + w) // s + extra))
    else:
        q_start = np.where(k < w, 0, s * ((k - wr + off) // s))
        q_end = np.where(k >= n_g - w, n_g, s * ((k + wl + off + 1) // s))
    return q_start, q_end


def axis_mask(n: int, w: int, s: int, d: int, causal: bool) -> np.ndarray:
    """Dense ``[n, n]`` boolean mask of one axis: ``mask[q, k]`` iff key ``k`` is in query ``q``'s
    neighbourhood along this axis. Brute-force helper for tests and small problems."""
    i = np.arange(n, dtype=np.int64)
    g = i % d
    j = i // d
    n_g = group_lengths(n, d)[g]
    start, end = window(j, n_g, w, s, causal)
    kj = i // d
    same_group = g[:, None] == g[None, :]
    inside = (kj[None, :] >= start[:, None]) & (kj[None, :] < end[:, None])
    return same_group & inside


def neighborhood_mask(params: GNAParams) -> np.ndarray:
    """Dense ``[N, N]`` boolean mask over the raster-ordered grid (``N = prod(spatial_shape)``):
    the product of the per-axis masks. Brute force: only for small grids."""
    mask = np.ones((1, 1), dtype=bool)
    for n, w, s, d, c in params.axes():
        m = axis_mask(n, w, s, d, c)
        mask = (mask[:, None, :, None] & m[None, :, None, :]).reshape(
            mask.shape[0] * m.shape[0], mask.shape[1] * m.shape[1]
        )
    return mask


def visible_keys_per_query(params: GNAParams) -> np.ndarray:
    """``[*spatial_shape]`` int64: number of visible keys of every query (product over axes)."""
    counts = np.ones((), dtype=np.int64)
    for n, w, s, d, c in params.axes():
        i = np.arange(n, dtype=np.int64)
        start, end = window(i // d, group_lengths(n, d)[i % d], w, s, c)
        counts = np.multiply.outer(counts, end - start)
    return counts


def tile_kv_box(q_start, q_end, n_g, w: int, s: int, causal: bool):
    """Union of the key windows of in-group queries ``[q_start, q_end)`` (``q_end > q_start``).

    Window starts and ends are monotone non-decreasing in the query index, so the union of a
    contiguous run of queries is ``[start(first), end(last))``. Returns ``(box_start, box_end)``.
    """
    q_start = np.asarray(q_start, dtype=np.int64)
    q_last = np.asarray(q_end, dtype=np.int64) - 1
    start, _ = window(q_start, n_g, w, s, causal)
    _, end = window(q_last, n_g, w, s, causal)
    return start, end


def tile_kv_intersection(q_start, q_end, n_g, w: int, s: int, causal: bool):
    """Intersection of the key windows of the in-group queries ``[q_start, q_end)``.

    The keys that *every* query of the run sees: ``[start(last), end(first))``, by the same
    monotonicity as :func:`tile_kv_box`. Empty when ``end <= start``. A (query run, key run) block
    is fully unmasked along this axis iff the key run lies inside this intersection.
    """
    q_first = np.asarray(q_start, dtype=np.int64)
    q_last = np.asarray(q_end, dtype=np.int64) - 1
    _, end = window(q_first, n_g, w, s, causal)
    start, _ = window(q_last, n_g, w, s, causal)
    return start, end
