"""Dense attention with log-sum-exp, and the merge of attentions over disjoint key sets."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    scale: float | None = None,
    return_lse: bool = False,
):
    """Dense softmax attention computed in float32 (float64 for float64 inputs).

    Args:
      query: ``[batch, *q_spatial, heads_q, head_dim]`` (any number of token axes, >= 1).
      key: ``[batch, *kv_spatial, heads_kv, head_dim]`` with ``heads_q % heads_kv == 0``.
      value: ``[batch, *kv_spatial, heads_kv, head_dim_v]``.
      scale: score multiplier, default ``head_dim ** -0.5``.
      return_lse: also return the float32 log-sum-exp ``[batch, *q_spatial, heads_q]``.

    Returns:
      ``out`` ``[batch, *q_spatial, heads_q, head_dim_v]`` in ``value.dtype``, or ``(out, lse)``.
    """
    if query.ndim < 4 or key.ndim < 4 or value.ndim != key.ndim:
        raise ValueError(
            "attention expects [batch, *tokens, heads, head_dim] arrays, got "
            f"{query.shape}, {key.shape}, {value.shape}"
        )
    if key.shape[:-1] != value.shape[:-1] or key.shape[-1] != query.shape[-1]:
        raise ValueError(f"key {key.shape} / value {value.shape} do not match query {query.shape}")
    heads_q, heads_kv = query.shape[-2], key.shape[-2]
    if heads_q % heads_kv:
        raise ValueError(f"heads of query ({heads_q}) must be a multiple of heads_kv ({heads_kv})")
    if scale is None:
        scale = float(query.shape[-1]) ** -0.5
    batch = query.shape[0]
    q_spatial = query.shape[1:-2]
    q = query.reshape(batch, -1, heads_kv, heads_q // heads_kv, query.shape[-1])
    compute = jnp.promote_types(query.dtype, jnp.float32)
    k = key.reshape(batch, -1, heads_kv, key.shape[-1]).astype(compute)
    v = value.reshape(batch, -1, heads_kv, value.shape[-1]).astype(compute)
    scores = jnp.einsum("bqhgd,bkhd->bhgqk", q.astype(compute), k, precision=_HIGHEST)
    scores = scores * scale
    lse = jax.nn.logsumexp(scores, axis=-1)  # [b, h, g, q]
    probs = jnp.exp(scores - lse[..., None])
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v, precision=_HIGHEST)
    out = out.reshape((batch, *q_spatial, heads_q, value.shape[-1])).astype(value.dtype)
    if not return_lse:
        return out
    lse = lse.transpose(0, 3, 1, 2).reshape((batch, *q_spatial, heads_q))
    return out, lse


def merge_attentions(
    outputs: Sequence[jax.Array], lses: Sequence[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """Combine attentions of the same queries over disjoint key sets into one.

    ``L = logsumexp_i(L_i)`` and ``O = sum_i exp(L_i - L) * O_i``; for two parts this is
    ``O = O0 - sigmoid(L1 - L0) * (O0 - O1)``. Differentiable.

    Args:
      outputs: each ``[batch, *spatial, heads, head_dim]``.
      lses: each ``[batch, *spatial, heads]`` (float32).

    Returns:
      ``(out, lse)`` with ``out`` in the dtype of ``outputs[0]`` and float32 ``lse``.
    """
    if len(outputs) != len(lses) or len(outputs) < 1:
        raise ValueError(
            f"merge_attentions needs as many lses as outputs (>= 1), got {len(outputs)} outputs "
            f"and {len(lses)} lses"
        )
    for i, (o, lse) in enumerate(zip(outputs, lses, strict=True)):
        if o.shape != outputs[0].shape or lse.shape != o.shape[:-1]:
            raise ValueError(
                f"outputs[{i}] {o.shape} / lses[{i}] {lse.shape} must match outputs[0] "
                f"{outputs[0].shape} and its shape without head_dim"
            )
    compute = jnp.promote_types(lses[0].dtype, jnp.float32)
    stacked_lse = jnp.stack([x.astype(compute) for x in lses])
    lse = jax.nn.logsumexp(stacked_lse, axis=0)
    weights = jnp.exp(stacked_lse - lse[None])
    out = sum(w[..., None] * o.astype(compute) for w, o in zip(weights, outputs, strict=True))
    return out.astype(outputs[0].dtype), lse
