"""Flax NNX module around the symmetric contraction (species-indexed, channel-wise weights)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_mace.symmetric_contraction.dispatch import contract
from jax_mace.symmetric_contraction.paths import PathList, build_path_list


class SymmetricContraction(nnx.Module):
    """MACE product basis: ``x [N, C, K] -> [N, C, M]`` with weights ``[num_species, W, C]``.

    Args:
        irreps_in: irreps of one channel of the input (``K`` components), e.g. ``"0e+1o+2e+3o"``.
        irreps_out: irreps of one channel of the output (``M`` components), e.g. ``"0e+1o"``.
        correlation: maximal correlation order (1..3).
        num_species: number of element types (rows of the weight table).
        num_channels: ``C``.
        backend: contraction backend passed to :func:`~.dispatch.contract` (None = default).
        rngs: NNX random streams for the weight init.
    """

    def __init__(
        self,
        irreps_in: str,
        irreps_out: str,
        correlation: int,
        num_species: int,
        num_channels: int,
        *,
        backend: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.paths: PathList = nnx.static(build_path_list(irreps_in, irreps_out, correlation))
        self.backend = nnx.static(backend)
        # Each (output irrep, nu) group of weights is initialised with unit total variance.
        group = self.paths.w_out.astype(np.int64) * 8 + self.paths.w_nu
        _, inverse, counts = np.unique(group, return_inverse=True, return_counts=True)
        std = (1.0 / np.sqrt(counts[inverse])).astype(np.float32)
        shape = (num_species, self.paths.num_weights, num_channels)
        # NumPy draw from the stream's key (jax.random compiles once per shape: slow on CPU).
        seed = np.asarray(jax.random.key_data(rngs.params())).astype(np.uint32)
        w = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        self.weights = nnx.Param(jnp.asarray(w * std[None, :, None]))

    def __call__(self, x: jax.Array, species: jax.Array) -> jax.Array:
        """``x [N, C, K]``, ``species [N]`` int -> ``[N, C, M]``."""
        return contract(x, self.weights[...], species, self.paths, backend=self.backend)
