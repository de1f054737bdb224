"""Flax Linen twins of the NNX layers: ``NeighborhoodAttention1D/2D/3D``."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jax_gna.modules_common import check_module_config, check_tokens, split_heads_and_attend


class NeighborhoodAttention(nn.Module):
    """Self-attention restricted to GNA neighbourhoods (Linen). ``x`` ``[batch, *spatial,
    embed_dim]`` -> same shape. Parameters ``qkv`` and ``proj`` mirror the NNX layer."""

    embed_dim: int
    num_heads: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    dilation: int | Sequence[int] = 1
    is_causal: bool | Sequence[bool] = False
    qkv_bias: bool = True
    qk_scale: float | None = None
    proj_bias: bool = True
    num_kv_heads: int | None = None
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32
    backend: str | None = None
    rank: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        head_dim, kv_heads = check_module_config(self.embed_dim, self.num_heads, self.num_kv_heads)
        check_tokens(x, self.rank, self.embed_dim)
        qkv = nn.Dense(
            (self.num_heads + 2 * kv_heads) * head_dim, use_bias=self.qkv_bias, dtype=self.dtype,
            param_dtype=self.param_dtype, name="qkv",
        )(x)  # fmt: skip
        out = split_heads_and_attend(
            qkv, self.num_heads, kv_heads, head_dim, kernel_size=self.kernel_size,
            stride=self.stride, dilation=self.dilation, is_causal=self.is_causal,
            scale=self.qk_scale, backend=self.backend,
        )  # fmt: skip
        return nn.Dense(
            self.embed_dim, use_bias=self.proj_bias, dtype=self.dtype,
            param_dtype=self.param_dtype, name="proj",
        )(out)  # fmt: skip


class NeighborhoodAttention1D(NeighborhoodAttention):
    """Linen neighborhood attention on ``[batch, length, embed_dim]``."""

    rank: int = 1


class NeighborhoodAttention2D(NeighborhoodAttention):
    """Linen neighborhood attention on ``[batch, height, width, embed_dim]``."""

    rank: int = 2


class NeighborhoodAttention3D(NeighborhoodAttention):
    """Linen neighborhood attention on ``[batch, depth, height, width, embed_dim]``."""

    rank: int = 3
