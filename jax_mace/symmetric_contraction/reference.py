"""Pure-JAX symmetric contraction over a path list: the functional core and correctness twin.

    out[n, c, m] = sum_{p : out_idx[p] == m} coeff[p] * weights[species[n], w_idx[p], c]
                   * prod_{t < nu[p]} x[n, c, in_idx[p, t]]

Shapes: ``x [N, C, K]``, ``weights [S, W, C]``, ``species [N]`` int, ``out [N, C, M]`` (see
:mod:`jax_mace.symmetric_contraction.paths` for the path list layout). Built only from gathers,
products and one matmul, so it is jit/vmap friendly and differentiable to any order (training on
forces needs the second derivative). Memory is ``O(N * C * P)``; work ``O(N * C * P * (K + M))``.
"""

from __future__ import annotations

import functools

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
    sel_x, sel_w, scatter = _selection_matrices(paths)
    n, c, _ = x.shape
    # Gathers are written as matmuls with 0/1 matrices: dense, fast on CPU and GPU, and their
    # derivatives are matmuls again (no scatter-adds). Slot -1 (unused factor of a nu < 3 path)
    # selects an appended constant 1.
    xe = jnp.concatenate([x, jnp.ones((n, c, 1), dtype)], axis=-1)  # [N, C, K+1]
    mono = xe @ sel_x[0].astype(dtype)
    for t in range(1, sel_x.shape[0]):
        mono = mono * (xe @ sel_x[t].astype(dtype))  # [N, C, P]
    s = weights.shape[0]
    onehot = jax.nn.one_hot(species, s, dtype=dtype)  # [N, S]
    w_node = jnp.einsum("ns,swc->ncw", onehot, weights.astype(dtype))  # [N, C, W]
    w_path = w_node @ sel_w.astype(dtype)  # [N, C, P]
    return (mono * w_path) @ scatter.astype(dtype)


@functools.lru_cache(maxsize=64)
def _selection_matrices(paths: PathList) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0/1 selections ``[T, K+1, P]`` of the factors, ``[W, P]`` of the weights, and the
    coefficient-weighted scatter ``[P, M]`` to the outputs (``T`` = highest order present)."""
    p = paths.num_paths
    t_max = int(paths.nu.max()) if p else 1
    idx = np.where(paths.in_idx < 0, paths.num_in, paths.in_idx)
    sel_x = np.zeros((t_max, paths.num_in + 1, p), np.float32)
    for t in range(t_max):
        sel_x[t, idx[:, t], np.arange(p)] = 1.0
    sel_w = np.zeros((paths.num_weights, p), np.float32)
    sel_w[paths.w_idx, np.arange(p)] = 1.0
    scatter = np.zeros((p, paths.num_out), np.float64)
    scatter[np.arange(p), paths.out_idx] = paths.coeff
    return sel_x, sel_w, scatter
