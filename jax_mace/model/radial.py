"""Radial embedding of edge lengths: Bessel basis times a polynomial cutoff envelope."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bessel_basis(r: jax.Array, r_max: float, num_basis: int) -> jax.Array:
    """``B_n(r) = sqrt(2 / r_max) * sin(n pi r / r_max) / r``, n = 1..num_basis.

    ``r [E]`` (A, must be > 0) -> ``[E, num_basis]``.
    """
    n = jnp.arange(1, num_basis + 1, dtype=r.dtype)
    return jnp.sqrt(2.0 / r_max) * jnp.sin(n * jnp.pi * r[:, None] / r_max) / r[:, None]


def polynomial_cutoff(r: jax.Array, r_max: float, p: int) -> jax.Array:
    """``f(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, ``x = r / r_max``.

    Smooth (``C^2`` at ``x = 1``), zero for ``x >= 1``. ``r [E]`` -> ``[E]``.
    """
    x = r / r_max
    f = (
        1.0
        - (p + 1.0) * (p + 2.0) / 2.0 * x**p
        + p * (p + 2.0) * x ** (p + 1)
        - p * (p + 1.0) / 2.0 * x ** (p + 2)
    )
    return jnp.where(x < 1.0, f, 0.0)


def radial_embedding(r: jax.Array, r_max: float, num_basis: int, p: int) -> jax.Array:
    """``[E]`` lengths -> ``[E, num_basis]`` enveloped Bessel features."""
    return bessel_basis(r, r_max, num_basis) * polynomial_cutoff(r, r_max, p)[:, None]
