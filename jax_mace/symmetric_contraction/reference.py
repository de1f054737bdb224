"""Pure-JAX symmetric contraction over a path list: the functional core and correctness twin.

    out[n, c, m] = sum_{p : out_idx[p] == m} coeff[p] * weights[species[n], w_idx[p], c]
                   * prod_{t < nu[p]} x[n, c, in_idx[p, t]]

Shapes: ``x [N, C, K]``, ``weights [S, W, C]``, ``species [N]`` int, ``out [N, C, M]`` (see
:mod:`jax_mace.symmetric_contraction.paths` for the path list layout). Built only from gathers,
products and one matmul, so it is jit/vmap friendly and differentiable to any order (training on
forces needs the second derivative). Memory is ``O(N * C * P)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jax_mace.symmetric_contraction.paths import PathList


def _check_shapes(x: jax.Array, weights: jax.Array, species: jax.Array, paths: PathList) -> None:
    if x.ndim != 3 or x.shape[-1] != paths.num_in:
        raise ValueError(f"x must have shape [N, C, K={paths.num_in}], got {x.shape}")
    n, c, _ = x.shape
    if weights.ndim != 3 or weights.shape[1:] != (paths.num_weights, c):
        raise ValueError(
            f"weights must have shape [S, W={paths.num_weights}, C={c}], got {weights.shape}"
        )
    if species.shape != (n,):
        raise ValueError(f"species must have shape [N={n}], got {species.shape}")
    if not jnp.issubdtype(species.dtype, jnp.integer):
        raise ValueError(f"species must be integer, got {species.dtype}")


def symmetric_contraction(
    x: jax.Array, weights: jax.Array, species: jax.Array, paths: PathList
) -> jax.Array:
    """Evaluate the sparse polynomial of ``paths`` per node and channel.

    Args:
        x: ``[N, C, K]`` input components per node and channel.
        weights: ``[S, W, C]`` weights per species, weight index and channel.
        species: ``[N]`` integer species index of each node (into the first axis of ``weights``).
        paths: the path list (static).

    Returns:
        ``[N, C, M]`` with the dtype of ``x``.
    """
    _check_shapes(x, weights, species, paths)
    dtype = x.dtype
    # Slot -1 (unused factor of a nu < 3 path) reads an appended constant 1.
    ones = jnp.ones(x.shape[:2] + (1,), dtype)
    xt = jnp.swapaxes(jnp.concatenate([x, ones], axis=-1), 1, 2)  # [N, K+1, C]
    idx = np.where(paths.in_idx < 0, paths.num_in, paths.in_idx)
    mono = xt[:, idx[:, 0], :] * xt[:, idx[:, 1], :] * xt[:, idx[:, 2], :]  # [N, P, C]
    w = weights.astype(dtype)[species][:, paths.w_idx, :]  # [N, P, C]
    scatter = np.zeros((paths.num_paths, paths.num_out))
    scatter[np.arange(paths.num_paths), paths.out_idx] = paths.coeff
    out = jnp.einsum("npc,pm->ncm", mono * w, jnp.asarray(scatter, dtype))
    return out
