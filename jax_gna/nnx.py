"""Flax NNX neighborhood-attention layers: ``NeighborhoodAttention1D/2D/3D``."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jax_gna.modules_common import check_module_config, check_tokens, split_heads_and_attend


class NeighborhoodAttention(nnx.Module):
    """Self-attention restricted to GNA neighbourhoods on a ``rank``-D token grid.

    Call with ``x`` ``[batch, *spatial, embed_dim]``; returns the same shape. A fused QKV
    projection (with ``num_kv_heads`` key/value heads for GQA/MQA), GNA, and an output
    projection.
    """

    rank: int = 0

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        is_causal: bool | Sequence[bool] = False,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        proj_bias: bool = True,
        num_kv_heads: int | None = None,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        backend: str | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.head_dim, self.num_kv_heads = check_module_config(embed_dim, num_heads, num_kv_heads)
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.attention_kwargs = dict(
            kernel_size=kernel_size, stride=stride, dilation=dilation, is_causal=is_causal,
            scale=qk_scale, backend=backend,
        )  # fmt: skip
        qkv_features = (num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv = nnx.Linear(
            embed_dim, qkv_features, use_bias=qkv_bias, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs,
        )  # fmt: skip
        self.proj = nnx.Linear(
            embed_dim, embed_dim, use_bias=proj_bias, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs,
        )  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        check_tokens(x, self.rank, self.embed_dim)
        out = split_heads_and_attend(
            self.qkv(x), self.num_heads, self.num_kv_heads, self.head_dim, **self.attention_kwargs
        )
        return self.proj(out)


class NeighborhoodAttention1D(NeighborhoodAttention):
    """NNX neighborhood attention on ``[batch, length, embed_dim]``."""

    rank = 1


class NeighborhoodAttention2D(NeighborhoodAttention):
    """NNX neighborhood attention on ``[batch, height, width, embed_dim]``."""

    rank = 2


class NeighborhoodAttention3D(NeighborhoodAttention):
    """NNX neighborhood attention on ``[batch, depth, height, width, embed_dim]``."""

    rank = 3
