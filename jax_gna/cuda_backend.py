"""The fused GNA forward CUDA kernel (Hopper, sm_90a) as a differentiable JAX function.

:func:`gna_forward_cuda` calls the XLA FFI target ``jaxk_gna_fwd`` built from ``cpp/gna``; the
launch tables come from :mod:`jax_gna.tiling`. The kernel is forward-only: the backward pass is
the VJP of the pure-JAX reference (:func:`jax_gna.reference.gna_reference`). Under ``vmap`` the
FFI call is batched with ``vmap_method="broadcast_all"`` and the handler folds every leading
dimension into the batch, so a vmapped call is still one kernel launch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_gna import tiling
from simulator.geometry import GNAParams

TARGET = "jaxk_gna_fwd"
_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
_MAX_BLOCKS = 2**31 - 1


def _hopper_reason() -> str | None:
    """None when the default GPU is a Hopper (compute capability 9.0), else why not."""
    try:
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
    except RuntimeError as err:
        return f"no GPU backend: {err}"
    if not gpus:
        return "JAX sees no GPU"
    cc = str(getattr(gpus[0], "compute_capability", ""))
    if cc and not cc.startswith("9."):
        return f"the CUDA kernel is built for Hopper (sm_90a); this GPU has compute capability {cc}"
    return None


def unsupported_reason(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    dtype,
    params: GNAParams,
) -> str | None:
    """Why the CUDA kernel cannot run this call (``None`` when it can).

    Args:
      query_shape: ``[B, *spatial, heads_q, head_dim]``.
      key_shape, value_shape: ``[B, *spatial, heads_kv, head_dim]``.
      dtype: dtype of query, key and value.
      params: validated GNA parameters of the token grid.
    """
    dtype = jnp.dtype(dtype)
    if dtype not in _DTYPES:
        return f"{dtype} inputs run on the reference path (the CUDA kernel takes bf16 and fp16)"
    rank = params.rank
    if len(query_shape) != rank + 3 or len(key_shape) != rank + 3:
        return f"expected [batch, *spatial({rank}), heads, head_dim] inputs, got {query_shape}"
    head_dim = int(query_shape[-1])
    if head_dim not in tiling.SUPPORTED_HEAD_DIMS:
        dims = ", ".join(str(d) for d in tiling.SUPPORTED_HEAD_DIMS)
        return f"head_dim {head_dim} is not one of {dims}"
    if int(key_shape[-1]) != head_dim or int(value_shape[-1]) != head_dim:
        return "the CUDA kernel needs the same head_dim for query, key and value"
    if tuple(key_shape) != tuple(value_shape):
        return "key and value shapes differ"
    if tuple(query_shape[1:-2]) != tuple(key_shape[1:-2]) or query_shape[0] != key_shape[0]:
        return "the CUDA kernel needs query and key on the same token grid and batch"
    heads_q, heads_kv = int(query_shape[-2]), int(key_shape[-2])
    if heads_kv < 1 or heads_q % heads_kv:
        return f"heads_q ({heads_q}) must be a multiple of heads_kv ({heads_kv})"
    q_tile, kv_tile = tiling.choose_tiles(params, head_dim)
    plan = tiling.make_plan(params, head_dim, q_tile, kv_tile)
    if plan.q_tiles * heads_q * int(np.prod(query_shape[:1])) > _MAX_BLOCKS:
        return "too many (query tile, head, batch) work items for one launch (> 2^31)"
    import jax_gna  # late: jax_gna imports this module's users

    status = jax_gna.cuda_status()
    if not status.available:
        return status.reason
    if not status.has(TARGET):
        return f"the CUDA extension does not export {TARGET} (rebuild it)"
    return _hopper_reason()


def _forward_call(query, key, value, params: GNAParams, scale: float, q_tile, kv_tile):
    plan = tiling.make_plan(params, query.shape[-1], q_tile, kv_tile)
    out_types = (
        jax.ShapeDtypeStruct(query.shape, value.dtype),
        jax.ShapeDtypeStruct(query.shape[:-1], jnp.float32),
    )
    call = jax.ffi.ffi_call(TARGET, out_types, vmap_method="broadcast_all")
    attrs = {"rank": np.int64(params.rank), "scale": np.float32(scale)}
    for a in range(tiling.KERNEL_RANK):
        attrs[f"q_tile{a}"] = np.int64(plan.q_tile3[a])
        attrs[f"kv_tile{a}"] = np.int64(plan.kv_tile3[a])
        attrs[f"dil{a}"] = np.int64(plan.dilation3[a])
        attrs[f"num_tiles{a}"] = np.int64(plan.num_tiles[a])
        attrs[f"axis_off{a}"] = np.int64(plan.axis_offsets[a])
        attrs[f"tile_order{a}"] = np.int64(plan.tile_order[a])
    return call(query, key, value, jnp.asarray(plan.tables), **attrs)


def _kernel_forward(query, key, value, params: GNAParams, scale: float, q_tile, kv_tile):
    """The kernel assumes a positive scale (its running max is taken on raw scores): fold the
    sign into the query, exactly (q.k * s == (-q).k * (-s)); a zero scale is uniform attention
    over the visible keys, i.e. zero scores at scale 1."""
    if scale < 0:
        query, scale = -query, -scale
    elif scale == 0:
        query, scale = jnp.zeros_like(query), 1.0
    return _forward_call(query, key, value, params, scale, q_tile, kv_tile)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _gna_cuda(query, key, value, params, scale, q_tile, kv_tile):
    return _kernel_forward(query, key, value, params, scale, q_tile, kv_tile)


def _gna_cuda_fwd(query, key, value, params, scale, q_tile, kv_tile):
    out = _kernel_forward(query, key, value, params, scale, q_tile, kv_tile)
    return out, (query, key, value)


def _gna_cuda_bwd(params, scale, q_tile, kv_tile, residuals, cotangents):
    from jax_gna.reference import gna_reference

    query, key, value = residuals
    _, vjp = jax.vjp(lambda q, k, v: gna_reference(q, k, v, params, scale), query, key, value)
    return vjp(cotangents)


_gna_cuda.defvjp(_gna_cuda_fwd, _gna_cuda_bwd)


def resolve_tiles(
    params: GNAParams,
    head_dim: int,
    q_tile: Sequence[int] | int | None = None,
    kv_tile: Sequence[int] | int | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The tile shapes a call will use: the policy's choice unless overridden (ints broadcast)."""
    auto_q, auto_kv = tiling.choose_tiles(params, head_dim)
    rank = params.rank

    def norm(t, auto):
        if t is None:
            return auto
        return (int(t),) * rank if isinstance(t, (int, np.integer)) else tuple(int(x) for x in t)

    return norm(q_tile, auto_q), norm(kv_tile, auto_kv)


def gna_forward_cuda(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    params: GNAParams,
    scale: float,
    q_tile: Sequence[int] | int | None = None,
    kv_tile: Sequence[int] | int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """GNA forward on the fused CUDA kernel.

    Args:
      query: ``[B, *spatial, heads_q, head_dim]`` bf16 or fp16.
      key, value: ``[B, *spatial, heads_kv, head_dim]``, same dtype, ``heads_q % heads_kv == 0``.
      params: validated :class:`simulator.geometry.GNAParams` of ``spatial``.
      scale: multiplier of the dot products.
      q_tile, kv_tile: optional tile shapes (powers of two per axis; the Q tile holds 128 tokens,
        the KV tile 128, or 64 for head_dim 256). Default: :func:`jax_gna.tiling.choose_tiles`.

    Returns:
      ``(out, lse)``: ``out`` like ``query`` in ``value.dtype``; ``lse`` float32
      ``[B, *spatial, heads_q]``, natural log-sum-exp of the scaled visible scores.
    """
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(
            f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, "
            f"{value.dtype}"
        )
    reason = unsupported_reason(query.shape, key.shape, value.shape, query.dtype, params)
    if reason is not None:
        raise ValueError(f"the GNA CUDA kernel cannot run this call: {reason}")
    q_tile, kv_tile = resolve_tiles(params, query.shape[-1], q_tile, kv_tile)
    tiling.make_plan(params, query.shape[-1], q_tile, kv_tile)  # validates the tile shapes
    return _gna_cuda(query, key, value, params, float(scale), q_tile, kv_tile)
