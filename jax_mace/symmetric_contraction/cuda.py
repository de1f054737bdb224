"""CUDA backend of the symmetric contraction: XLA FFI calls of the engine kernels.

Same signature and semantics as :func:`~.reference.symmetric_contraction`
(``x [N, C, K]``, ``weights [S, W, C]``, ``species [N]`` -> ``[N, C, M]``), float32 or float64,
``K, M <= 16``. The computation is split into differentiable pieces, each an FFI call wrapped in
``jax.custom_vjp`` whose backward is again made of these pieces, so ``jax.grad`` of a loss on
forces (a second derivative) runs on the kernels:

- ``tbase``: ``TW[s, c, j] = sum_p coeff_p W[s, w_p, c]`` (linear; its VJP is ``wgrad`` and
  vice versa);
- ``contract``: ``out = F(x, TW)`` (engine program ``fwd``); VJP: ``(gx, Z) = B(x, TW, g)``
  (program ``bwd``, ``Z`` = cotangent of ``TW``);
- ``B``'s VJP with cotangents ``(hx, hZ)``: programs ``dx`` (also the cotangent of ``TW``) and
  ``dg``. A third derivative is not supported.

Nodes are sorted by species inside (counting sort, ``jaxk_symcon_sort``) so that a block shares
one species' coefficients; callers need not sort. Programs come from
:mod:`~.cuda_program` at trace time (NumPy), cached per path list, and are passed to the kernels
as device buffers: one compiled kernel serves any path list.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jax_mace.symmetric_contraction import cuda_program as cp
from jax_mace.symmetric_contraction.paths import PathList

TARGETS = ("jaxk_symcon_sort", "jaxk_symcon_tbase", "jaxk_symcon_wgrad", "jaxk_symcon_engine")
ENGINE_TARGET = "jaxk_symcon_engine"
SUPPORTED_DTYPES = (jnp.float32, jnp.float64)
_SDS = jax.ShapeDtypeStruct


def unavailable_reason(x: jax.Array | None = None, paths: PathList | None = None) -> str | None:
    """Why the CUDA backend cannot run (``None`` when it can) for ``x`` and ``paths``."""
    import jax_mace

    status = jax_mace.cuda_status()
    if not all(status.has(t) for t in TARGETS):
        return f"the MACE CUDA extension is not usable: {status.reason}"
    if x is not None and x.dtype not in SUPPORTED_DTYPES:
        return f"the CUDA symmetric contraction supports float32/float64, not {x.dtype}"
    if paths is not None and (paths.num_in > cp.ONE or paths.num_out > cp.ONE):
        return f"the CUDA engine supports K, M <= {cp.ONE} (got {paths.num_in}, {paths.num_out})"
    return None


def _call(name: str, result_shapes, *args, **attrs):
    return jax.ffi.ffi_call(name, result_shapes, vmap_method="sequential")(*args, **attrs)


def sort_shapes(n: int, num_species: int):
    """Outputs of the species sort of ``n`` nodes: ``perm [N]``, ``items [I, 4]``, ``nitems [1]``
    and its scratch ``work [S + 2]`` (counts and the last-block ticket); int32."""
    max_items = -(-n // cp.ITEM_NODES) + num_species + 1
    return (
        _SDS((n,), jnp.int32),
        _SDS((max_items, 4), jnp.int32),
        _SDS((1,), jnp.int32),
        _SDS((num_species + 2,), jnp.int32),
    )


def _sort(species: jax.Array, num_species: int):
    """``perm [N]`` (node ids grouped by species), ``items [I, 4]``, ``nitems [1]``."""
    shapes = sort_shapes(species.shape[0], num_species)
    perm, items, nitems, _ = _call(
        "jaxk_symcon_sort", shapes, species.astype(jnp.int32), num_species=np.int64(num_species)
    )
    return perm, items, nitems


def _tb_arrays(paths: PathList, dtype):
    base = cp.base_terms(paths)
    return (
        jnp.asarray(base.tb_start),
        jnp.asarray(base.tb_w),
        jnp.asarray(base.tb_coeff, dtype),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tbase(paths: PathList, w: jax.Array) -> jax.Array:
    """``w [S, W, C] -> TW [S, C, D]``."""
    s, _, c = w.shape
    d = cp.base_terms(paths).num_terms
    return _call("jaxk_symcon_tbase", _SDS((s, c, d), w.dtype), w, *_tb_arrays(paths, w.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _wgrad(paths: PathList, z: jax.Array) -> jax.Array:
    """Transpose of :func:`_tbase`: ``z [S, C, D] -> [S, W, C]``."""
    s, c, _ = z.shape
    shape = _SDS((s, paths.num_weights, c), z.dtype)
    return _call("jaxk_symcon_wgrad", shape, z, *_tb_arrays(paths, z.dtype))


def _tbase_fwd(paths, w):
    return _tbase(paths, w), None


def _tbase_bwd(paths, _, t_bar):
    return (_wgrad(paths, t_bar),)


def _wgrad_fwd(paths, z):
    return _wgrad(paths, z), None


def _wgrad_bwd(paths, _, w_bar):
    return (_tbase(paths, w_bar),)


_tbase.defvjp(_tbase_fwd, _tbase_bwd)
_wgrad.defvjp(_wgrad_fwd, _wgrad_bwd)


def _engine(paths: PathList, kind: str, operands, t0, t1, aux):
    """Run program ``kind``; returns ``out [N, C, mreal]`` and the carrier sums (or None)."""
    prog = cp.program(paths, kind)
    dtype = operands[0].dtype
    n, c = operands[0].shape[:2]
    s, _, d = t0.shape
    ops = [o.astype(dtype) for o in operands] + [operands[0]] * (3 - len(operands))
    shapes = (
        _SDS((n, c, prog.mreal), dtype),
        _SDS((s, c, d) if prog.has_carry else (1,), dtype),
    )
    attrs = prog.attrs()
    smap = np.asarray(attrs.pop("smap"), np.int32)
    attrs = {k: np.int64(v) for k, v in attrs.items()}
    out, z = _call(
        ENGINE_TARGET,
        shapes,
        *ops,
        t0,
        t1,
        *aux,
        jnp.asarray(prog.i32),
        jnp.asarray(prog.f64, dtype),
        smap=smap,
        **attrs,
    )
    return out, (z if prog.has_carry else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _forward(paths, x, tw, perm, items, nitems):
    return _engine(paths, "fwd", [x], tw, tw, (perm, items, nitems))[0]


def _forward_fwd(paths, x, tw, perm, items, nitems):
    return _forward(paths, x, tw, perm, items, nitems), (x, tw, perm, items, nitems)


def _forward_bwd(paths, res, g):
    x, tw, perm, items, nitems = res
    gx, z = _backward(paths, x, tw, g, perm, items, nitems)
    return gx, z, None, None, None


_forward.defvjp(_forward_fwd, _forward_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _backward(paths, x, tw, g, perm, items, nitems):
    """``(gx [N, C, K], Z [S, C, D])``: the VJP of ``_forward`` for cotangent ``g``."""
    return _engine(paths, "bwd", [x, g], tw, tw, (perm, items, nitems))


def _backward_fwd(paths, x, tw, g, perm, items, nitems):
    return _backward(paths, x, tw, g, perm, items, nitems), (x, tw, g, perm, items, nitems)


def _backward_bwd(paths, res, cts):
    x, tw, g, perm, items, nitems = res
    hx, hz = cts
    aux = (perm, items, nitems)
    dg, _ = _engine(paths, "dg", [x, hx], tw, hz, aux)
    dx, dtw = _engine(paths, "dx", [x, g, hx], tw, hz, aux)
    return dx, dtw, dg, None, None, None


_backward.defvjp(_backward_fwd, _backward_bwd)


def checked_inputs(x, weights, species, paths: PathList, reason: str | None) -> bool:
    """Shared prologue of the CUDA backends: check shapes and refuse with ``reason`` (if any).
    Returns whether there is work (nodes, channels and species)."""
    from jax_mace.symmetric_contraction.reference import _check_shapes

    _check_shapes(x, weights, species, paths)
    if reason is not None:
        raise RuntimeError(reason)
    n, c, _ = x.shape
    return n > 0 and c > 0 and weights.shape[0] > 0


def sorted_inputs(x, weights, species, paths: PathList, reason: str | None):
    """:func:`checked_inputs`, then the nodes sorted by species: ``(perm, items, nitems)``, or
    ``None`` when the result is empty (no nodes, channels or species)."""
    if not checked_inputs(x, weights, species, paths, reason):
        return None
    return _sort(species, weights.shape[0])


def symmetric_contraction_cuda(
    x: jax.Array, weights: jax.Array, species: jax.Array, paths: PathList
) -> jax.Array:
    """CUDA twin of :func:`~.reference.symmetric_contraction` (same arguments and result).

    Args:
        x: ``[N, C, K]`` float32/float64.
        weights: ``[S, W, C]`` (cast to ``x.dtype``).
        species: ``[N]`` integers; nodes with a species outside ``[0, S)`` get zero outputs
            (like the reference's one-hot weight lookup).
        paths: the path list (static).

    Returns:
        ``[N, C, M]`` in ``x.dtype``.
    """
    sort = sorted_inputs(x, weights, species, paths, unavailable_reason(x, paths))
    if sort is None:
        return jnp.zeros((*x.shape[:2], paths.num_out), x.dtype)
    tw = _tbase(paths, weights.astype(x.dtype))
    return _forward(paths, x, tw, *sort)
