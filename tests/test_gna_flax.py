"""Flax NNX and Linen neighborhood-attention layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jax_gna
from jax_gna import linen as gna_linen
from jax_gna import nnx as gna_nnx


@pytest.mark.parametrize(
    "cls,spatial,kernel",
    [(gna_nnx.NeighborhoodAttention1D, (12,), 5), (gna_nnx.NeighborhoodAttention2D, (6, 7), 3),
     (gna_nnx.NeighborhoodAttention3D, (3, 4, 5), (2, 3, 3))],
)  # fmt: skip
def test_nnx_layer_shapes_and_grad(cls, spatial, kernel):
    layer = cls(embed_dim=16, num_heads=4, kernel_size=kernel, num_kv_heads=2, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *spatial, 16)), jnp.float32)
    y = layer(x)
    assert y.shape == x.shape

    def loss(model):
        return jnp.mean(model(x) ** 2)

    grads = nnx.grad(loss)(layer)
    assert np.isfinite(np.asarray(grads.qkv.kernel[...])).all()


def test_nnx_layer_equals_functional_call():
    layer = gna_nnx.NeighborhoodAttention2D(8, 2, kernel_size=3, stride=(1, 2), rngs=nnx.Rngs(1))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 5, 6, 8)), jnp.float32)
    qkv = layer.qkv(x).reshape(1, 5, 6, 3, 2, 4)
    attn = jax_gna.na2d(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :], 3, (1, 2))
    np.testing.assert_allclose(layer(x), layer.proj(attn.reshape(1, 5, 6, 8)), atol=1e-5)


def test_linen_twin_matches_nnx_with_same_weights():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 9, 8)), jnp.float32)
    nnx_layer = gna_nnx.NeighborhoodAttention1D(8, 2, kernel_size=4, stride=2, rngs=nnx.Rngs(2))
    linen_layer = gna_linen.NeighborhoodAttention1D(embed_dim=8, num_heads=2, kernel_size=4,
                                                    stride=2)  # fmt: skip
    params = {
        "qkv": {"kernel": nnx_layer.qkv.kernel[...], "bias": nnx_layer.qkv.bias[...]},
        "proj": {"kernel": nnx_layer.proj.kernel[...], "bias": nnx_layer.proj.bias[...]},
    }
    assert jax.tree.structure(linen_layer.init(jax.random.key(0), x)["params"]) == (
        jax.tree.structure(params)
    )
    np.testing.assert_allclose(linen_layer.apply({"params": params}, x), nnx_layer(x), atol=1e-5)


def test_module_config_errors():
    with pytest.raises(ValueError, match="must be a positive multiple of num_heads"):
        gna_nnx.NeighborhoodAttention2D(10, 3, kernel_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="must be a multiple of num_kv_heads"):
        gna_nnx.NeighborhoodAttention2D(12, 4, kernel_size=3, num_kv_heads=3, rngs=nnx.Rngs(0))
    layer = gna_nnx.NeighborhoodAttention2D(8, 2, kernel_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="inputs must be \\[batch, 2 spatial axes"):
        layer(jnp.zeros((1, 6, 8)))
