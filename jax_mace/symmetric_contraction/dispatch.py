"""One entry point for the symmetric contraction, routed to a backend.

``contract`` is what :class:`~jax_mace.symmetric_contraction.module.SymmetricContraction` calls;
backends share the signature and semantics of
:func:`~jax_mace.symmetric_contraction.reference.symmetric_contraction`:

- ``"reference"``: pure JAX (any device, any order of derivative);
- ``"cuda"``: kernels specialised per path list at trace time (:mod:`.jit`, NVRTC), the fast one;
- ``"cuda-engine"``: one precompiled kernel that reads any path list from device buffers
  (:mod:`.cuda`); no run-time compiler needed.

``backend=None`` picks ``"cuda"`` when :data:`AUTO_CUDA` is set, ``x`` lives on a GPU and the
backend can run there (extension built, NVRTC importable, dtype supported), else
``"reference"``; it never switches silently to the engine. Forcing a CUDA backend where it cannot
run raises ``RuntimeError`` with the reason. :func:`last_backend` tells which backend the latest
call chose (the choice is also logged at debug level).
"""

from __future__ import annotations

import logging

import jax

from jax_mace.symmetric_contraction.paths import PathList
from jax_mace.symmetric_contraction.reference import symmetric_contraction

BACKENDS = ("reference", "cuda", "cuda-engine")
DEFAULT_BACKEND = "reference"
AUTO_CUDA = True
_LAST = {"backend": None}
log = logging.getLogger(__name__)


def last_backend() -> str | None:
    """The backend chosen by the most recent :func:`contract` call (at trace time)."""
    return _LAST["backend"]


def _on_gpu(x: jax.Array) -> bool:
    try:
        return all(d.platform == "gpu" for d in x.devices())
    except Exception:  # a tracer: assume the default device
        return jax.default_backend() == "gpu"


def _auto_backend(x: jax.Array, paths: PathList) -> str:
    from jax_mace.symmetric_contraction.jit import unavailable_reason

    if AUTO_CUDA and _on_gpu(x):
        reason = unavailable_reason(x, paths)
        if reason is None:
            return "cuda"
        log.debug("symmetric contraction: CUDA backend not used: %s", reason)
    return DEFAULT_BACKEND


def contract(
    x: jax.Array,
    weights: jax.Array,
    species: jax.Array,
    paths: PathList,
    backend: str | None = None,
) -> jax.Array:
    """``x [N, C, K]``, ``weights [S, W, C]``, ``species [N]`` -> ``[N, C, M]``.

    ``backend``: ``None`` (automatic, see the module docstring) or one of :data:`BACKENDS`.
    """
    backend = _auto_backend(x, paths) if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown symmetric-contraction backend {backend!r}; choose from {BACKENDS}"
        )
    _LAST["backend"] = backend
    log.debug("symmetric contraction: backend %s", backend)
    if backend == "reference":
        return symmetric_contraction(x, weights, species, paths)
    if backend == "cuda":
        from jax_mace.symmetric_contraction.jit import symmetric_contraction_jit

        return symmetric_contraction_jit(x, weights, species, paths)
    from jax_mace.symmetric_contraction.cuda import symmetric_contraction_cuda

    return symmetric_contraction_cuda(x, weights, species, paths)
