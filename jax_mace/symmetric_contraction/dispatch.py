"""One entry point for the symmetric contraction, routed to a backend.

``contract`` is what :class:`~jax_mace.symmetric_contraction.module.SymmetricContraction` calls;
backends share the signature and semantics of
:func:`~jax_mace.symmetric_contraction.reference.symmetric_contraction`.

``backend=None`` picks ``"cuda"`` (the fused kernels of :mod:`.cuda`) when :data:`AUTO_CUDA` is
set, the CUDA extension is usable, ``x`` lives on a GPU and its dtype and shapes are supported,
else ``"reference"``. Forcing ``"cuda"`` where it cannot run raises ``RuntimeError`` with the
reason. :func:`last_backend` tells which backend the latest call chose.
"""

from __future__ import annotations

import jax

from jax_mace.symmetric_contraction.paths import PathList
from jax_mace.symmetric_contraction.reference import symmetric_contraction

BACKENDS = ("reference", "cuda")
DEFAULT_BACKEND = "reference"
# Off for now: measured on an H200 (docs/symcon_cuda.md), the CUDA engine is 3-8x faster than the
# reference on 10k-node contractions but slower inside a MACE-MP-medium force-training step
# (1280 nodes). Set to True (or pass backend="cuda") to use it automatically on GPU.
AUTO_CUDA = False
_LAST = {"backend": None}


def last_backend() -> str | None:
    """The backend chosen by the most recent :func:`contract` call (at trace time)."""
    return _LAST["backend"]


def _on_gpu(x: jax.Array) -> bool:
    try:
        return all(d.platform == "gpu" for d in x.devices())
    except Exception:  # a tracer: assume the default device
        return jax.default_backend() == "gpu"


def _auto_backend(x: jax.Array, paths: PathList) -> str:
    from jax_mace.symmetric_contraction.cuda import unavailable_reason

    if AUTO_CUDA and _on_gpu(x) and unavailable_reason(x, paths) is None:
        return "cuda"
    return DEFAULT_BACKEND


def contract(
    x: jax.Array,
    weights: jax.Array,
    species: jax.Array,
    paths: PathList,
    backend: str | None = None,
) -> jax.Array:
    """``x [N, C, K]``, ``weights [S, W, C]``, ``species [N]`` -> ``[N, C, M]``.

    ``backend=None`` picks ``"cuda"`` where it can run if :data:`AUTO_CUDA`, else
    :data:`DEFAULT_BACKEND`.
    """
    backend = _auto_backend(x, paths) if backend is None else backend
    if backend == "reference":
        _LAST["backend"] = backend
        return symmetric_contraction(x, weights, species, paths)
    if backend == "cuda":
        from jax_mace.symmetric_contraction.cuda import symmetric_contraction_cuda

        _LAST["backend"] = backend
        return symmetric_contraction_cuda(x, weights, species, paths)
    raise ValueError(f"unknown symmetric-contraction backend {backend!r}; choose from {BACKENDS}")
