"""The pure-JAX GNA against brute force, the worked examples, and JAX transformations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gna_brute_force import brute_force_gna, random_config
from jax.test_util import check_grads

import jax_gna
from simulator import geometry

NUM_RANDOM = 200


def _inputs(rng, batch, spatial, heads_q, heads_kv, dim, dim_v=None, dtype=np.float32):
    q = rng.standard_normal((batch, *spatial, heads_q, dim)).astype(dtype)
    k = rng.standard_normal((batch, *spatial, heads_kv, dim)).astype(dtype)
    v = rng.standard_normal((batch, *spatial, heads_kv, dim_v or dim)).astype(dtype)
    return q, k, v


@pytest.mark.parametrize("seed", range(NUM_RANDOM))
def test_random_configs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    spatial, w, s, d, causal = random_config(rng, rank=seed % 3 + 1)
    heads_kv = int(rng.integers(1, 3))
    heads_q = heads_kv * int(rng.integers(1, 3))
    batch = int(rng.integers(1, 3))
    q, k, v = _inputs(rng, batch, spatial, heads_q, heads_kv, dim=4)
    scale = float(rng.uniform(0.2, 1.0))
    out, lse = jax_gna.neighborhood_attention(
        q, k, v, w, s, d, causal, scale=scale, return_lse=True, backend="reference"
    )
    params = geometry.make_params(spatial, w, s, d, causal)
    ref_out, ref_lse = brute_force_gna(q, k, v, params, scale)
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(lse), ref_lse, atol=2e-5, rtol=1e-5)


# gna.md worked examples (n = 10, inclusive key ranges): query -> visible keys.
WORKED_EXAMPLES = [
    (dict(w=4, s=1), {0: range(0, 4), 2: range(0, 4), 3: range(1, 5), 8: range(6, 10)}),
    (
        dict(w=4, s=2),
        {
            0: range(0, 4),
            1: range(0, 4),
            2: range(1, 5),
            4: range(3, 7),
            7: range(5, 9),
            9: range(6, 10),
        },
    ),  # fmt: skip
    (dict(w=4, s=4), {0: range(0, 4), 3: range(0, 4), 5: range(4, 8), 8: range(6, 10)}),
    (
        dict(w=4, s=2, causal=True),
        {0: [0], 1: [0, 1], 2: range(0, 3), 3: range(0, 4), 4: range(2, 5), 5: range(2, 6)},
    ),
    (
        dict(w=3, s=1, d=2),
        {0: [0, 2, 4], 1: [1, 3, 5], 4: [2, 4, 6], 8: [4, 6, 8], 9: [5, 7, 9]},
    ),
]


@pytest.mark.parametrize("setting,expected", WORKED_EXAMPLES)
def test_worked_examples_through_attention(setting, expected):
    """With zero queries the attention is uniform over the neighbourhood; one-hot values then
    read the visible key set back out of the output."""
    n = 10
    q = jnp.zeros((1, n, 1, 4))
    k = jnp.ones((1, n, 1, 4))
    v = jnp.eye(n)[None, :, None, :]
    out = jax_gna.na1d(
        q, k, v, setting["w"], setting.get("s", 1), setting.get("d", 1),
        setting.get("causal", False), backend="reference",
    )  # fmt: skip
    for query, keys in expected.items():
        want = np.zeros(n)
        want[list(keys)] = 1.0 / len(list(keys))
        np.testing.assert_allclose(np.asarray(out[0, query, 0]), want, atol=1e-6)


@pytest.mark.parametrize("spatial", [(13,), (6, 9), (4, 5, 6)])
def test_full_window_is_dense_attention(spatial):
    rng = np.random.default_rng(1)
    q, k, v = _inputs(rng, 2, spatial, 4, 2, 8)
    out, lse = jax_gna.neighborhood_attention(q, k, v, spatial, return_lse=True)
    ref, ref_lse = jax_gna.attention(q, k, v, return_lse=True)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-5)


def test_blocked_attention_with_shifted_last_block():
    """stride == window: disjoint blocks, the partial last block shifted back to overlap."""
    rng = np.random.default_rng(2)
    n, w = 10, 4
    q, k, v = _inputs(rng, 1, (n,), 1, 1, 8)
    out = jax_gna.na1d(q, k, v, w, stride=w)
    blocks = {range(0, 4): range(0, 4), range(4, 8): range(4, 8), range(8, 10): range(6, 10)}
    for queries, keys in blocks.items():
        ks = list(keys)
        ref = jax_gna.attention(q[:, list(queries)], k[:, ks], v[:, ks])
        np.testing.assert_allclose(out[:, list(queries)], ref, atol=1e-5)


def test_additional_keys_merge_equals_joint_attention():
    rng = np.random.default_rng(3)
    q, k, v = _inputs(rng, 2, (5, 7), 4, 2, 8)
    extra_k = rng.standard_normal((2, 3, 2, 8)).astype(np.float32)
    extra_v = rng.standard_normal((2, 3, 2, 8)).astype(np.float32)
    out, lse = jax_gna.na2d(
        q, k, v, (3, 4), stride=(1, 2), additional_keys=extra_k, additional_values=extra_v,
        return_lse=True,
    )  # fmt: skip
    params = geometry.make_params((5, 7), (3, 4), (1, 2))
    ref, ref_lse = brute_force_gna(q, k, v, params, 8**-0.5, extra_k, extra_v)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5)


def test_merge_attentions_two_part_formula():
    rng = np.random.default_rng(4)
    o0, o1 = (jnp.asarray(rng.standard_normal((2, 5, 3, 4)), jnp.float32) for _ in range(2))
    l0, l1 = (jnp.asarray(rng.standard_normal((2, 5, 3)), jnp.float32) for _ in range(2))
    out, lse = jax_gna.merge_attentions([o0, o1], [l0, l1])
    want = o0 - jax.nn.sigmoid(l1 - l0)[..., None] * (o0 - o1)
    np.testing.assert_allclose(out, want, atol=1e-6)
    np.testing.assert_allclose(lse, l0 - jax.nn.log_sigmoid(l0 - l1), atol=1e-6)


@pytest.mark.parametrize(
    "spatial,w,s,d,causal",
    [((9,), 4, 2, 1, False), ((6, 7), (3, 2), (1, 2), (1, 2), (False, True)),
     ((4, 5, 4), 2, (1, 2, 2), 1, (True, False, False))],
)  # fmt: skip
def test_gradients_numerically(spatial, w, s, d, causal):
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        q, k, v = (jnp.asarray(x) for x in _inputs(rng, 1, spatial, 2, 1, 3, dtype=np.float64))

        def f(q, k, v):
            out, lse = jax_gna.neighborhood_attention(q, k, v, w, s, d, causal, return_lse=True)
            return out, lse

        check_grads(jax.jit(f), (q, k, v), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_gradient_matches_brute_force_autodiff():
    """Gradients of the tiled reference equal gradients of a dense masked attention."""
    rng = np.random.default_rng(6)
    spatial, w, s, d, causal = (7, 6), (3, 4), (2, 1), (2, 1), (False, True)
    q, k, v = (jnp.asarray(x) for x in _inputs(rng, 2, spatial, 2, 2, 4))
    mask = jnp.asarray(geometry.neighborhood_mask(geometry.make_params(spatial, w, s, d, causal)))
    cot = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

    def dense(q, k, v):
        qf, kf, vf = (x.reshape(2, -1, 2, 4) for x in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", qf, kf, precision="highest") * 0.5
        probs = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, vf, precision="highest").reshape(q.shape)

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * cot)

    ours = jax.grad(loss(lambda q, k, v: jax_gna.na2d(q, k, v, w, s, d, causal, 0.5)), (0, 1, 2))
    want = jax.grad(loss(dense), (0, 1, 2))
    for a, b in zip(ours(q, k, v), want(q, k, v), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_jit_vmap_grad_compose():
    rng = np.random.default_rng(7)
    q, k, v = (jnp.asarray(x) for x in _inputs(rng, 3, (8, 6), 2, 2, 4))

    def single(q, k, v):  # one batch element: [1, *S, H, D]
        return jax_gna.na2d(q, k, v, 3, stride=(2, 1))

    batched = jax.jit(jax.vmap(single, in_axes=(0, 0, 0)))(q[:, None], k[:, None], v[:, None])
    np.testing.assert_allclose(batched[:, 0], single(q, k, v), atol=1e-6)
    grads = jax.jit(jax.grad(lambda q: jnp.sum(single(q, k, v) ** 2)))(q)
    assert grads.shape == q.shape and bool(jnp.all(jnp.isfinite(grads)))


def test_bf16_inputs_keep_dtype_and_accuracy():
    rng = np.random.default_rng(8)
    q, k, v = _inputs(rng, 1, (6, 6), 2, 2, 8)
    out = jax_gna.na2d(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), 3)
    assert out.dtype == jnp.bfloat16
    ref, _ = brute_force_gna(q, k, v, geometry.make_params((6, 6), 3), 8**-0.5)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=5e-2)


def test_large_3d_grid_memory_is_linear_in_tokens():
    """16x64x64 tokens, 16 heads, head_dim 64: the dense score matrix alone would take
    65536^2 * 16 * 4 B = 275 GB; the compiled reference must stay within a few GB."""
    shape = jax.ShapeDtypeStruct((1, 16, 64, 64, 16, 64), jnp.bfloat16)

    def fwd(q, k, v):
        return jax_gna.na3d(q, k, v, (3, 7, 7), backend="reference")

    compiled = jax.jit(fwd).lower(shape, shape, shape).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        pytest.skip("memory analysis not available on this backend")
    assert stats.temp_size_in_bytes < 3 * 2**30, stats


def test_backend_choice_is_observable():
    q = jnp.ones((1, 8, 2, 4))
    jax_gna.na1d(q, q, q, 3, backend="reference")
    assert jax_gna.last_backend().name == "reference"
    jax_gna.na1d(q, q, q, 3)
    choice = jax_gna.last_backend()
    assert choice.name in ("reference", "cuda") and choice.reason
