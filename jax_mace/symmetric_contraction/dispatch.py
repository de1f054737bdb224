"""One entry point for the symmetric contraction, routed to a backend.

``contract`` is what :class:`~jax_mace.symmetric_contraction.module.SymmetricContraction` calls;
backends share the signature and semantics of
:func:`~jax_mace.symmetric_contraction.reference.symmetric_contraction`.
"""

from __future__ import annotations

import jax

from jax_mace.symmetric_contraction.paths import PathList
from jax_mace.symmetric_contraction.reference import symmetric_contraction

BACKENDS = ("reference",)
DEFAULT_BACKEND = "reference"


def contract(
    x: jax.Array,
    weights: jax.Array,
    species: jax.Array,
    paths: PathList,
    backend: str | None = None,
) -> jax.Array:
    """``x [N, C, K]``, ``weights [S, W, C]``, ``species [N]`` -> ``[N, C, M]``.

    ``backend=None`` picks :data:`DEFAULT_BACKEND`.
    """
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend == "reference":
        return symmetric_contraction(x, weights, species, paths)
    raise ValueError(f"unknown symmetric-contraction backend {backend!r}; choose from {BACKENDS}")
