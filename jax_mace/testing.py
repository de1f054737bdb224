"""Helpers for equivariance tests: random rotations and Wigner-D matrices of real irreps."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import numpy as np


def random_rotation(seed: int, improper: bool = False) -> np.ndarray:
    """Uniformly random rotation ``[3, 3]`` (float64); ``improper`` multiplies it by -1."""
    q = np.random.default_rng(seed).normal(size=4)
    a, b, c, d = q / np.linalg.norm(q)
    r = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )
    return -r if improper else r


@jax.jit
def _sh(points):
    return e3nn.spherical_harmonics("0e+1o+2e+3o+4e", points, normalize=True).array


def wigner_d(irreps, rotation: np.ndarray) -> np.ndarray:
    """Block-diagonal ``D [dim, dim]`` with ``x -> D @ x`` rotating ``irreps`` (l <= 4) features.

    Each ``D_l`` is fitted from the real spherical harmonics, ``Y_l(R p) = D_l Y_l(p)``, which is
    exact for e3nn's basis; the parity ``p`` of an irrep enters as ``p`` when ``det R = -1``.
    """
    rotation = np.asarray(rotation, np.float64)
    det = np.linalg.det(rotation)
    proper = rotation * np.sign(det)
    pts = np.random.default_rng(0).normal(size=(64, 3))
    y = np.asarray(_sh(pts), np.float64)
    y_rot = np.asarray(_sh(pts @ proper.T), np.float64)
    blocks = []
    for mul, ir in e3nn.Irreps(irreps):
        if ir.l > 4:
            raise ValueError(f"wigner_d supports l <= 4, got {ir}")
        sl = slice(ir.l**2, (ir.l + 1) ** 2)
        d_l = np.linalg.lstsq(y[:, sl], y_rot[:, sl], rcond=None)[0].T
        sign = ir.p if det < 0 else 1
        blocks += [sign * d_l] * mul
    out = np.zeros((sum(b.shape[0] for b in blocks),) * 2)
    i = 0
    for b in blocks:
        out[i : i + b.shape[0], i : i + b.shape[0]] = b
        i += b.shape[0]
    return out
