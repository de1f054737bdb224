"""Brute-force dense masked attention in float64 NumPy: the oracle for GNA tests."""

from __future__ import annotations

import numpy as np

from simulator import geometry


def brute_force_gna(q, k, v, params: geometry.GNAParams, scale: float, extra_k=None, extra_v=None):
    """Dense attention over the raster-ordered grid with the GNA mask (plus optional extra keys
    visible to every query). Returns ``(out [B, *S, Hq, Dv], lse [B, *S, Hq])`` in float64."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    batch, heads_q, heads_kv = q.shape[0], q.shape[-2], k.shape[-2]
    n = int(np.prod(params.spatial_shape))
    mask = geometry.neighborhood_mask(params)
    qf = q.reshape(batch, n, heads_q, -1)
    kf = np.repeat(k.reshape(batch, n, heads_kv, -1), heads_q // heads_kv, axis=2)
    vf = np.repeat(v.reshape(batch, n, heads_kv, -1), heads_q // heads_kv, axis=2)
    if extra_k is not None:
        ek = np.repeat(np.asarray(extra_k, np.float64), heads_q // heads_kv, axis=2)
        ev = np.repeat(np.asarray(extra_v, np.float64), heads_q // heads_kv, axis=2)
        kf = np.concatenate([kf, ek], axis=1)
        vf = np.concatenate([vf, ev], axis=1)
        mask = np.concatenate([mask, np.ones((n, ek.shape[1]), bool)], axis=1)
    scores = np.einsum("bqhd,bkhd->bhqk", qf, kf) * scale
    scores = np.where(mask[None, None], scores, -np.inf)
    peak = scores.max(-1, keepdims=True)
    probs = np.exp(scores - peak)
    total = probs.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", probs / total, vf)
    lse = (peak + np.log(total))[..., 0].transpose(0, 2, 1)
    return out.reshape(q.shape[:-1] + (v.shape[-1],)), lse.reshape(q.shape[:-1])


def random_config(rng: np.random.Generator, rank: int | None = None, max_size: int = 11):
    """A random valid GNA configuration on a small grid: ``(spatial, w, s, d, causal)``."""
    rank = int(rng.integers(1, 4)) if rank is None else rank
    limit = max_size if rank < 3 else min(max_size, 7)
    spatial, windows, strides, dilations = [], [], [], []
    for _ in range(rank):
        n = int(rng.integers(2, limit + 1))
        d = int(rng.integers(1, n // 2 + 1)) if n >= 4 and rng.random() < 0.35 else 1
        w = int(rng.integers(2, n // d + 1))
        s = int(rng.integers(1, w + 1)) if rng.random() < 0.6 else 1
        spatial.append(n)
        windows.append(w)
        strides.append(s)
        dilations.append(d)
    causal = tuple(bool(c) for c in rng.random(rank) < 0.3)
    return tuple(spatial), tuple(windows), tuple(strides), tuple(dilations), causal
