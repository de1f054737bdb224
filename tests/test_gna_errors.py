"""Every invalid argument raises ValueError naming the argument and the rule, before tracing."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jax_gna

Q2 = jnp.zeros((1, 8, 8, 4, 16))
KV2 = jnp.zeros((1, 8, 8, 2, 16))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kernel_size=1), "kernel_size must be >= 2"),
        (dict(kernel_size=9), "kernel_size * dilation must be <= the spatial size"),
        (dict(kernel_size=3, dilation=3), "kernel_size * dilation must be <= the spatial size"),
        (dict(kernel_size=3, stride=4), "stride must be <= kernel_size"),
        (dict(kernel_size=3, stride=0), "stride must be >= 1"),
        (dict(kernel_size=3, dilation=0), "dilation must be >= 1"),
        (dict(kernel_size=(3, 3, 3)), "kernel_size must have one entry per spatial axis"),
        (dict(kernel_size=3, stride=(1,)), "stride must have one entry per spatial axis"),
        (dict(kernel_size=3, is_causal=(True,)), "is_causal must have one entry per spatial axis"),
        (dict(kernel_size=3.5), "kernel_size must be a int"),
        (dict(kernel_size=(3, 2.0)), "kernel_size entries must be ints"),
        (dict(kernel_size=3, backend="triton"), "backend must be None, 'reference' or 'cuda'"),
    ],
)
def test_parameter_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        jax_gna.na2d(Q2, KV2, KV2, **kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "q,k,v,message",
    [
        (jnp.zeros((8, 4, 16)), jnp.zeros((8, 4, 16)), jnp.zeros((8, 4, 16)), "rank 4, 5 or 6"),
        (jnp.zeros((1, 8, 4, 16)), jnp.zeros((1, 8, 4, 16)), jnp.zeros((1, 8, 4, 16)),
         "na2d expects query of rank 5"),
        (Q2, jnp.zeros((1, 8, 7, 2, 16)), KV2, "share batch and spatial shape"),
        (Q2, jnp.zeros((1, 8, 8, 2, 8)), KV2, "key head_dim must equal query head_dim"),
        (Q2, KV2, jnp.zeros((1, 8, 8, 4, 16)), "key and value must have the same number of heads"),
        (Q2, jnp.zeros((1, 8, 8, 3, 16)), jnp.zeros((1, 8, 8, 3, 16)), "multiple of heads of key"),
        (Q2, KV2.astype(jnp.bfloat16), KV2, "same dtype"),
        (Q2.astype(jnp.int32), KV2.astype(jnp.int32), KV2.astype(jnp.int32), "floating point"),
        (Q2, KV2, jnp.zeros((1, 8, 8, 2)), "same rank"),
        (np.zeros((1, 8, 8, 4, 16)).tolist(), KV2, KV2, "query must be an array"),
    ],
)  # fmt: skip
def test_shape_and_dtype_errors(q, k, v, message):
    with pytest.raises(ValueError) as err:
        jax_gna.na2d(q, k, v, 3)
    assert message in str(err.value)


def test_additional_kv_errors():
    extra = jnp.zeros((1, 5, 2, 16))
    with pytest.raises(ValueError, match="must be given together"):
        jax_gna.na2d(Q2, KV2, KV2, 3, additional_keys=extra)
    with pytest.raises(ValueError, match=r"additional_keys must be \[batch=1"):
        jax_gna.na2d(Q2, KV2, KV2, 3, additional_keys=extra[:, :, :1],
                     additional_values=extra[:, :, :1])  # fmt: skip
    with pytest.raises(ValueError, match="shape \\[batch, tokens, heads_kv"):
        jax_gna.na2d(Q2, KV2, KV2, 3, additional_keys=extra[0], additional_values=extra[0])


def test_forced_cuda_backend_without_kernel_names_the_reason():
    if jax_gna.cuda_status().available:
        pytest.skip("CUDA backend is available here")
    with pytest.raises(ValueError, match="backend='cuda' cannot run this call"):
        jax_gna.na2d(Q2, KV2, KV2, 3, backend="cuda")


def test_errors_raise_before_tracing_under_jit():
    import jax

    with pytest.raises(ValueError, match="kernel_size must be >= 2"):
        jax.jit(lambda q, k, v: jax_gna.na2d(q, k, v, 1))(Q2, KV2, KV2)


def test_merge_attentions_errors():
    o = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError, match="as many lses as outputs"):
        jax_gna.merge_attentions([o, o], [jnp.zeros((1, 4, 2))])
    with pytest.raises(ValueError, match="must match outputs"):
        jax_gna.merge_attentions([o, o], [jnp.zeros((1, 4, 2)), jnp.zeros((1, 4, 3))])
