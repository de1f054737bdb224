"""User-facing GNA functions with NATTEN-compatible names: validation and backend dispatch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jax_gna.dense import attention, merge_attentions
from jax_gna.reference import gna_reference
from simulator.geometry import GNAParams, make_params

log = logging.getLogger(__name__)

BACKENDS = ("reference", "cuda")


@dataclass(frozen=True)
class BackendChoice:
    """Which implementation a call uses, and why."""

    name: str  # "reference" or "cuda"
    reason: str


_last_choice: BackendChoice | None = None


def last_backend() -> BackendChoice | None:
    """The backend chosen by the most recent GNA call traced in this process (``None`` before
    the first). Under ``jit`` the choice is made once, at trace time."""
    return _last_choice


def _check_inputs(query, key, value, rank: int | None) -> int:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise ValueError(f"{name} must be an array, got {type(x).__name__}")
    if query.ndim not in (4, 5, 6):
        raise ValueError(
            "query must have shape [batch, *spatial, heads, head_dim] with 1, 2 or 3 spatial axes "
            f"(rank 4, 5 or 6), got rank {query.ndim}: {query.shape}"
        )
    spatial_rank = query.ndim - 3
    if rank is not None and spatial_rank != rank:
        raise ValueError(
            f"na{rank}d expects query of rank {rank + 3} ([batch, {rank} spatial axes, heads, "
            f"head_dim]), got rank {query.ndim}: {query.shape}"
        )
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(
            f"query, key and value must have the same rank, got {query.shape}, {key.shape}, "
            f"{value.shape}"
        )
    if key.shape[:-2] != query.shape[:-2] or value.shape[:-2] != query.shape[:-2]:
        raise ValueError(
            "query, key and value must share batch and spatial shape, got "
            f"{query.shape[:-2]}, {key.shape[:-2]}, {value.shape[:-2]}"
        )
    if key.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"key head_dim must equal query head_dim, got {key.shape[-1]} and {query.shape[-1]}"
        )
    if value.shape[-2] != key.shape[-2]:
        raise ValueError(
            f"key and value must have the same number of heads, got {key.shape[-2]} and "
            f"{value.shape[-2]}"
        )
    if query.shape[-2] % key.shape[-2] != 0:
        raise ValueError(
            f"heads of query ({query.shape[-2]}) must be a multiple of heads of key/value "
            f"({key.shape[-2]}) (GQA/MQA)"
        )
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(
            f"query, key and value must have the same dtype, got {query.dtype}, {key.dtype}, "
            f"{value.dtype}"
        )
    if not jnp.issubdtype(query.dtype, jnp.floating):
        raise ValueError(f"query, key and value must be floating point, got {query.dtype}")
    return spatial_rank


def _check_additional(query, key, additional_keys, additional_values) -> None:
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together")
    if additional_keys is None:
        return
    ak, av = additional_keys, additional_values
    if ak.ndim != 4 or av.ndim != 4:
        raise ValueError(
            "additional_keys/additional_values must have shape [batch, tokens, heads_kv, "
            f"head_dim], got {ak.shape} and {av.shape}"
        )
    if ak.shape[0] != query.shape[0] or ak.shape[2] != key.shape[-2]:
        raise ValueError(
            f"additional_keys must be [batch={query.shape[0]}, tokens, heads_kv={key.shape[-2]}, "
            f"head_dim={key.shape[-1]}], got {ak.shape}"
        )
    if ak.shape[-1] != key.shape[-1] or av.shape[:3] != ak.shape[:3]:
        raise ValueError(
            f"additional_keys {ak.shape} / additional_values {av.shape} do not match key's "
            f"head_dim {key.shape[-1]} or each other"
        )
    if ak.dtype != query.dtype or av.dtype != query.dtype:
        raise ValueError(
            f"additional_keys/values must have the query dtype {query.dtype}, got {ak.dtype}, "
            f"{av.dtype}"
        )


def select_backend(query, key, value, params: GNAParams, backend: str | None) -> BackendChoice:
    """Pick the implementation for a validated call. ``backend=None`` takes the CUDA kernel when
    it is built, a GPU is visible and the configuration is supported, else the reference."""
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend must be None, 'reference' or 'cuda', got {backend!r}")
    if backend == "reference":
        return BackendChoice("reference", "forced by backend='reference'")
    reason = _cuda_unsupported_reason(query, key, value, params)
    if backend == "cuda":
        if reason is not None:
            raise ValueError(f"backend='cuda' cannot run this call: {reason}")
        return BackendChoice("cuda", "forced by backend='cuda'")
    if reason is None:
        return BackendChoice("cuda", "CUDA kernel available and supports this configuration")
    return BackendChoice("reference", reason)


def _cuda_unsupported_reason(query, key, value, params: GNAParams) -> str | None:
    try:
        from jax_gna import cuda_backend
    except ImportError as err:  # the kernel's Python side is optional too
        return f"jax_gna.cuda_backend is unavailable: {err}"
    return cuda_backend.unsupported_reason(
        tuple(query.shape), tuple(key.shape), tuple(value.shape), query.dtype, params
    )


def neighborhood_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    is_causal: bool | Sequence[bool] = False,
    scale: float | None = None,
    additional_keys: jax.Array | None = None,
    additional_values: jax.Array | None = None,
    return_lse: bool = False,
    backend: str | None = None,
    *,
    _rank: int | None = None,
):
    """Generalized Neighborhood Attention over a 1-D, 2-D or 3-D token grid.

    Args:
      query: ``[batch, *spatial, heads_q, head_dim]``.
      key, value: ``[batch, *spatial, heads_kv, head_dim]`` (``heads_q % heads_kv == 0``).
      kernel_size, stride, dilation: int (all axes) or one int per spatial axis.
      is_causal: bool (all axes) or one bool per spatial axis.
      scale: score multiplier, default ``head_dim ** -0.5``.
      additional_keys, additional_values: optional ``[batch, tokens, heads_kv, head_dim]`` that
        every query also attends to (dense), merged through the log-sum-exp.
      return_lse: also return the float32 log-sum-exp ``[batch, *spatial, heads_q]``.
      backend: ``None`` (fastest available), ``"reference"`` (pure JAX) or ``"cuda"``.

    Returns:
      ``out`` ``[batch, *spatial, heads_q, head_dim]`` in the input dtype, or ``(out, lse)``.
    """
    global _last_choice
    spatial_rank = _check_inputs(query, key, value, _rank)
    params = make_params(
        query.shape[1 : 1 + spatial_rank], kernel_size, stride, dilation, is_causal
    )
    _check_additional(query, key, additional_keys, additional_values)
    if scale is None:
        scale = float(query.shape[-1]) ** -0.5
    scale = float(np.float32(scale))

    choice = select_backend(query, key, value, params, backend)
    _last_choice = choice
    log.debug("jax_gna: %s backend (%s)", choice.name, choice.reason)
    if choice.name == "cuda":
        from jax_gna import cuda_backend

        out, lse = cuda_backend.gna_forward_cuda(query, key, value, params, scale)
    else:
        out, lse = gna_reference(query, key, value, params, scale)

    if additional_keys is not None:
        extra_out, extra_lse = attention(
            query, additional_keys, additional_values, scale=scale, return_lse=True
        )
        out, lse = merge_attentions([out, extra_out], [lse, extra_lse])
    return (out, lse) if return_lse else out


def _fixed_rank(rank: int, layout: str):
    def na(
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        is_causal: bool | Sequence[bool] = False,
        scale: float | None = None,
        additional_keys: jax.Array | None = None,
        additional_values: jax.Array | None = None,
        return_lse: bool = False,
        backend: str | None = None,
    ):
        return neighborhood_attention(
            query,
            key,
            value,
            kernel_size,
            stride,
            dilation,
            is_causal,
            scale,
            additional_keys,
            additional_values,
            return_lse,
            backend,
            _rank=rank,
        )

    na.__name__ = na.__qualname__ = f"na{rank}d"
    na.__doc__ = (
        f"{rank}-D neighborhood attention: ``query`` ``{layout}``; see "
        ":func:`neighborhood_attention` for the arguments."
    )
    return na


na1d = _fixed_rank(1, "[batch, length, heads, head_dim]")
na2d = _fixed_rank(2, "[batch, height, width, heads, head_dim]")
na3d = _fixed_rank(3, "[batch, depth, height, width, heads, head_dim]")
