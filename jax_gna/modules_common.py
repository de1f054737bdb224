"""Pieces shared by the Flax NNX and Linen neighborhood-attention modules."""

from __future__ import annotations

import jax

from jax_gna.api import neighborhood_attention


def check_module_config(
    embed_dim: int, num_heads: int, num_kv_heads: int | None
) -> tuple[int, int]:
    """Returns ``(head_dim, num_kv_heads)``; ``embed_dim`` must split evenly into heads."""
    if num_heads < 1 or embed_dim % num_heads:
        raise ValueError(
            f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})"
        )
    kv = num_heads if num_kv_heads is None else num_kv_heads
    if kv < 1 or num_heads % kv:
        raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({kv})")
    return embed_dim // num_heads, kv


def check_tokens(x: jax.Array, rank: int, embed_dim: int) -> None:
    if x.ndim != rank + 2 or x.shape[-1] != embed_dim:
        raise ValueError(
            f"inputs must be [batch, {rank} spatial axes, embed_dim={embed_dim}], got {x.shape}"
        )


def split_heads_and_attend(
    qkv: jax.Array, num_heads: int, num_kv_heads: int, head_dim: int, **attention_kwargs
) -> jax.Array:
    """``qkv [B, *S, (heads + 2 * kv_heads) * head_dim] -> attention output [B, *S, heads *
    head_dim]``."""
    lead = qkv.shape[:-1]
    q_end = num_heads * head_dim
    k_end = q_end + num_kv_heads * head_dim
    q = qkv[..., :q_end].reshape(*lead, num_heads, head_dim)
    k = qkv[..., q_end:k_end].reshape(*lead, num_kv_heads, head_dim)
    v = qkv[..., k_end:].reshape(*lead, num_kv_heads, head_dim)
    out = neighborhood_attention(q, k, v, **attention_kwargs)
    return out.reshape(*lead, num_heads * head_dim)
