"""Equivariant building blocks on irrep-keyed features.

Node and edge features are dicts ``{irrep: array [N, mul, 2l+1]}`` keyed by the irrep string
(``"0e"``, ``"1o"``, ...), in e3nn-jax's real basis with component normalization. Linears act on
the multiplicity axis of each irrep separately (weights ``N(0, 1)``, scaled by ``1/sqrt(fan_in)``
in the forward pass), so they commute with rotations.
"""

from __future__ import annotations

from collections.abc import Sequence

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Features = dict[str, jax.Array]

# Second moment of silu(x) for x ~ N(0, 1); dividing keeps activations of unit scale.
_SILU_NORM = 1.0 / float(
    np.sqrt(np.mean(jax.nn.silu(np.random.default_rng(0).normal(size=1_000_000)) ** 2))
)


def normalized_silu(x: jax.Array) -> jax.Array:
    """SiLU rescaled to unit second moment on standard normal input."""
    return jax.nn.silu(x) * _SILU_NORM


def normal_init(rngs: nnx.Rngs, shape: tuple[int, ...]) -> jax.Array:
    """Standard-normal float32 weights drawn from the ``params`` stream.

    Drawn with NumPy from the stream's key: ``jax.random.normal`` would compile once per shape,
    which dominates model construction on CPU.
    """
    seed = np.asarray(jax.random.key_data(rngs.params())).astype(np.uint32)
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def irrep_keys(irreps) -> list[str]:
    """Per-channel irreps (``"0e+1o"``) -> ``["0e", "1o"]`` (each irrep once, in order)."""
    keys = [str(ir) for _, ir in e3nn.Irreps(irreps)]
    if len(set(keys)) != len(keys):
        raise ValueError(f"irreps must list each irrep once, got {irreps}")
    return keys


def stack_components(feats: Features, keys: Sequence[str]) -> jax.Array:
    """``{irrep: [N, C, 2l+1]}`` -> ``[N, C, sum(2l+1)]`` in the order of ``keys``."""
    return jnp.concatenate([feats[k] for k in keys], axis=-1)


def split_components(x: jax.Array, keys: Sequence[str]) -> Features:
    """Inverse of :func:`stack_components`."""
    out, i = {}, 0
    for k in keys:
        d = e3nn.Irrep(k).dim
        out[k] = x[..., i : i + d]
        i += d
    return out


class IrrepsLinear(nnx.Module):
    """Equivariant linear ``{ir: [N, mul_in[ir], d]} -> {ir: [N, mul_out[ir], d]}``.

    Output irreps absent from the input are an error (they would be identically zero).
    """

    def __init__(self, mul_in: dict[str, int], mul_out: dict[str, int], *, rngs: nnx.Rngs):
        missing = [k for k in mul_out if k not in mul_in]
        if missing:
            raise ValueError(f"IrrepsLinear: output irreps {missing} are not in the input")
        self.fan_in = nnx.static(tuple((k, mul_in[k]) for k in mul_out))
        self.w = nnx.Dict(
            {k: nnx.Param(normal_init(rngs, (mul_in[k], m))) for k, m in mul_out.items()}
        )

    def __call__(self, feats: Features) -> Features:
        return {
            k: jnp.einsum("ncd,ck->nkd", feats[k], w[...]) / np.sqrt(dict(self.fan_in)[k])
            for k, w in self.w.items()
        }


class SpeciesLinear(nnx.Module):
    """Species-dependent equivariant linear: weights ``[num_species, mul_in, mul_out]`` per irrep
    (MACE's tensor product of features with the one-hot species)."""

    def __init__(
        self, mul_in: dict[str, int], mul_out: dict[str, int], num_species: int, *, rngs: nnx.Rngs
    ):
        missing = [k for k in mul_out if k not in mul_in]
        if missing:
            raise ValueError(f"SpeciesLinear: output irreps {missing} are not in the input")
        self.fan_in = nnx.static(tuple((k, mul_in[k]) for k in mul_out))
        self.w = nnx.Dict(
            {
                k: nnx.Param(normal_init(rngs, (num_species, mul_in[k], m)))
                for k, m in mul_out.items()
            }
        )

    def __call__(self, feats: Features, species_onehot: jax.Array) -> Features:
        return {
            k: jnp.einsum("ns,ncd,sck->nkd", species_onehot, feats[k], w[...])
            / np.sqrt(dict(self.fan_in)[k])
            for k, w in self.w.items()
        }


class MLP(nnx.Module):
    """Bias-free MLP, normalized SiLU between layers: ``[..., widths[0]] -> [..., widths[-1]]``."""

    def __init__(self, widths: Sequence[int], *, rngs: nnx.Rngs):
        self.weights = nnx.List(
            [
                nnx.Param(normal_init(rngs, (a, b)))
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.weights)
        for i, w in enumerate(self.weights):
            x = x @ w[...] / np.sqrt(w.shape[0])
            if i < n - 1:
                x = normalized_silu(x)
        return x
