"""CUDA symmetric contraction: program semantics on CPU, kernels vs the pure-JAX twin on GPU.

CPU tests check every engine program (forward, VJP, VJP of the VJP) through the exact NumPy
semantics of the kernels (:func:`cuda_program.emulate`) against autodiff of a pure-JAX model, and
that the whole differentiable chain lowers to the FFI targets. GPU tests (``-m gpu``) compare the
kernels with the reference: values, first and second derivatives, ``check_grads`` to order 2.
"""

from __future__ import annotations

import functools
import re
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mace.symmetric_contraction import cuda_program as cp
from jax_mace.symmetric_contraction.dispatch import contract, last_backend
from jax_mace.symmetric_contraction.paths import build_path_list
from jax_mace.symmetric_contraction.reference import symmetric_contraction

LMAX3 = "0e+1o+2e+3o"
MP = {"S": (LMAX3, "0e", 3), "M": (LMAX3, "0e+1o", 3), "L": (LMAX3, "0e+1o+2e", 3)}
SMALL = [("0e+1o", "0e+1o+2e", 3), ("1o+2e", "1o", 2), ("0e+2e", "0e+2e", 1), ("0e", "0e", 3)]


@functools.cache
def _paths(irreps_in, irreps_out, corr):
    return build_path_list(irreps_in, irreps_out, corr)


def _f_of_t(x, tw, species, base):
    """Pure-JAX ``out = sum_j TW[s, c, j] mono_j(x)``: the function the programs differentiate."""
    n, c, k = x.shape
    xt = jnp.concatenate(
        [x, jnp.zeros((n, c, cp.ONE - k), x.dtype), jnp.ones((n, c, 1), x.dtype)], axis=-1
    )
    key = base.key
    mono = xt[:, :, key[:, 1]] * xt[:, :, key[:, 2]] * xt[:, :, key[:, 3]]
    scatter = np.zeros((base.num_terms, base.num_out))
    scatter[np.arange(base.num_terms), key[:, 0]] = 1.0
    return jnp.einsum("ncd,dm->ncm", mono * tw[species], scatter)


def _emulated_case(case, seed):
    with jax.enable_x64(True):
        paths = _paths(*case)
        base = cp.base_terms(paths)
        rng = np.random.default_rng(seed)
        n, c, s = 9, 3, 4
        x = rng.normal(size=(n, c, paths.num_in))
        w = rng.normal(size=(s, paths.num_weights, c))
        species = rng.integers(0, s, n)
        tw = cp.tbase_np(w, base)
        g = rng.normal(size=(n, c, paths.num_out))
        hx = rng.normal(size=x.shape)
        hz = rng.normal(size=tw.shape)

        ref = np.asarray(
            jax.jit(symmetric_contraction, static_argnums=3)(x, w, jnp.asarray(species), paths)
        )
        out, _ = cp.emulate(cp.program(paths, "fwd"), [x], tw, tw, species)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)

        def f(x_, tw_):
            return _f_of_t(x_, tw_, species, base)

        def b(x_, tw_, g_):
            return jax.vjp(f, x_, tw_)[1](g_)

        def b2(x_, tw_, g_, hx_, hz_):
            return jax.vjp(b, x_, tw_, g_)[1]((hx_, hz_))

        def gw_ref(w_, g_):
            return jax.vjp(lambda a: symmetric_contraction(jnp.asarray(x), a, species, paths), w_)[
                1
            ](g_)[0]

        gx_r, z_r = jax.jit(b)(x, tw, g)
        gx, z = cp.emulate(cp.program(paths, "bwd"), [x, g], tw, tw, species)
        np.testing.assert_allclose(gx, gx_r, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(z, z_r, rtol=1e-12, atol=1e-12)
        gw_r = jax.jit(gw_ref)(w, g)
        np.testing.assert_allclose(cp.wgrad_np(z, base), gw_r, rtol=1e-12, atol=1e-12)

        dx_r, dtw_r, dg_r = jax.jit(b2)(x, tw, g, hx, hz)
        dg, _ = cp.emulate(cp.program(paths, "dg"), [x, hx], tw, hz, species)
        dx, z2 = cp.emulate(cp.program(paths, "dx"), [x, g, hx], tw, hz, species)
        np.testing.assert_allclose(dg, dg_r, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, dx_r, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(z2, dtw_r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", SMALL)
def test_programs_match_autodiff(case):
    _emulated_case(case, seed=hash(case) % 1000)


def test_programs_match_autodiff_mp_medium():
    _emulated_case(MP["M"], seed=1)


def test_tbase_wgrad_are_transposes():
    paths = _paths(*MP["S"])
    base = cp.base_terms(paths)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, paths.num_weights, 5))
    z = rng.normal(size=(3, 5, base.num_terms))
    lhs = np.vdot(cp.tbase_np(w, base), z)
    rhs = np.vdot(w, cp.wgrad_np(z, base))
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_program_sizes_fit_kernel_limits():
    for case in MP.values():
        paths = _paths(*case)
        for kind in ("fwd", "bwd", "dg", "dx"):
            prog = cp.program(paths, kind)
            assert prog.nv + 1 <= cp.MAX_SLOTS and prog.num_records < cp.MAX_RECORDS
            assert prog.mout <= cp.NREG and prog.i32.dtype == np.int32


def test_grad_of_grad_lowers_to_ffi_targets():
    from jax_mace.symmetric_contraction import cuda as cu

    paths = _paths(*MP["M"])

    def f(x, w, sp):
        perm, items, nitems = cu._sort(sp, w.shape[0])
        return cu._forward(paths, x, cu._tbase(paths, w), perm, items, nitems)

    def loss(x, w, sp):
        gx = jax.grad(lambda x_: jnp.sum(f(x_, w, sp) ** 2))(x)
        return jnp.sum(gx**2)

    x = jnp.ones((10, 8, 16))
    w = jnp.ones((3, paths.num_weights, 8))
    sp = jnp.zeros((10,), jnp.int32)
    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, w, sp)
    text = lowered.lower(lowering_platforms=("cuda",)).as_text()
    for target in ("jaxk_symcon_sort", "jaxk_symcon_tbase", "jaxk_symcon_wgrad"):
        assert target in text
    assert text.count("jaxk_symcon_engine") >= 4  # fwd, bwd, dg, dx


def test_engine_entry_point_lowers_and_handles_empty_inputs(monkeypatch):
    from jax_mace.symmetric_contraction import cuda as cu

    monkeypatch.setattr(cu, "unavailable_reason", lambda *a: None)
    paths = _paths(*SMALL[1])
    x = jnp.ones((6, 4, paths.num_in))
    w = jnp.ones((3, paths.num_weights, 4))
    sp = jnp.zeros((6,), jnp.int32)
    fn = jax.jit(lambda a, b, c: cu.symmetric_contraction_cuda(a, b, c, paths))
    text = fn.trace(x, w, sp).lower(lowering_platforms=("cuda",)).as_text()
    for target in ("jaxk_symcon_sort", "jaxk_symcon_tbase", "jaxk_symcon_engine"):
        assert target in text
    empty = cu.symmetric_contraction_cuda(x[:0], w, sp[:0], paths)
    assert empty.shape == (0, 4, paths.num_out)
    with pytest.raises(RuntimeError, match="no GPU here"):
        cu.sorted_inputs(x, w, sp, paths, "no GPU here")


def test_dispatch_without_gpu_uses_reference_and_forced_cuda_explains():
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("CPU-only behaviour")
    paths = _paths(*SMALL[1])
    x = jnp.ones((4, 2, paths.num_in))
    w = jnp.ones((2, paths.num_weights, 2))
    sp = jnp.zeros((4,), jnp.int32)
    contract(x, w, sp, paths)
    assert last_backend() == "reference"
    with pytest.raises(RuntimeError, match="CUDA"):
        contract(x, w, sp, paths, backend="cuda")


# ------------------------------------------------------------------------------------------------
# GPU: kernels vs the pure-JAX twin


def _inputs(paths, n, c, s, dtype, seed, pad=0):
    """Random unsorted inputs (call inside the matching x64 context)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c, paths.num_in)).astype(dtype)
    w = (rng.normal(size=(s, paths.num_weights, c)) / np.sqrt(paths.num_weights)).astype(dtype)
    species = rng.integers(0, s, n).astype(np.int32)
    if pad:
        x[-pad:] = 0.0  # padding nodes: zero features, species 0
        species[-pad:] = 0
    return jnp.asarray(x, dtype), jnp.asarray(w, dtype), jnp.asarray(species)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


_CUDA = {"backend": "cuda"}


@pytest.fixture(params=["cuda", "cuda-engine"])
def cuda_backend(request):
    """Runs a GPU test on both CUDA backends (specialised kernels and the generic engine)."""
    jax.clear_caches()  # jitted `_cuda` must retrace for the other backend
    _CUDA["backend"] = request.param
    yield request.param
    _CUDA["backend"] = "cuda"
    jax.clear_caches()


def _cuda(x, w, sp, paths):
    return contract(x, w, sp, paths, backend=_CUDA["backend"])


def _ref(x, w, sp, paths):
    # The reference is built on matmuls: without "highest" the GPU runs them in TF32 (~5e-4).
    with jax.default_matmul_precision("highest"):
        return contract(x, w, sp, paths, backend="reference")


GPU_CASES = [(case, np.float32) for case in [MP["S"], MP["M"], MP["L"], *SMALL]] + [
    (case, np.float64) for case in [MP["L"], SMALL[0], SMALL[1]]
]


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "dtype"), GPU_CASES)
def test_gpu_forward_and_vjp(case, dtype, cuda_backend):
    paths = _paths(*case)
    tol = 1e-11 if dtype == np.float64 else 2e-5
    with jax.enable_x64(dtype == np.float64):
        x, w, sp = _inputs(paths, n=300, c=16, s=7, dtype=dtype, seed=0, pad=5)
        out = jax.jit(_cuda, static_argnums=3)(x, w, sp, paths)
        ref = jax.jit(_ref, static_argnums=3)(x, w, sp, paths)
        assert out.dtype == dtype and out.shape == ref.shape
        assert _rel(out, ref) < tol
        g = jnp.asarray(np.random.default_rng(1).normal(size=ref.shape), dtype)

        def vjp(fn):
            return jax.jit(lambda x_, w_: jax.vjp(lambda a, b: fn(a, b, sp, paths), x_, w_)[1](g))

        (gx, gw), (gx_r, gw_r) = vjp(_cuda)(x, w), vjp(_ref)(x, w)
        assert _rel(gx, gx_r) < tol and _rel(gw, gw_r) < tol


@pytest.mark.gpu
@pytest.mark.parametrize("case", [MP["S"], MP["M"], MP["L"], SMALL[0]])
def test_gpu_second_derivatives_force_loss(case, cuda_backend):
    """grad over (x, W) of a loss on d(energy)/dx: the force-training derivative."""
    paths = _paths(*case)
    with jax.enable_x64(True):
        x, w, sp = _inputs(paths, n=150, c=8, s=5, dtype=np.float64, seed=2, pad=3)
        rng = np.random.default_rng(3)
        r = jnp.asarray(rng.normal(size=(x.shape[0], x.shape[1], paths.num_out)))
        target = jnp.asarray(rng.normal(size=x.shape))

        def loss(fn):
            def energy(x_, w_):
                out = fn(x_, w_, sp, paths)
                return jnp.sum(out * r) + 0.1 * jnp.sum(out**2)

            def total(x_, w_):
                forces = jax.grad(energy)(x_, w_)
                return jnp.sum((forces - target) ** 2) + energy(x_, w_)

            return jax.jit(jax.grad(total, argnums=(0, 1)))

        (dx, dw), (dx_r, dw_r) = loss(_cuda)(x, w), loss(_ref)(x, w)
        assert _rel(dx, dx_r) < 1e-10 and _rel(dw, dw_r) < 1e-10


@pytest.mark.gpu
def test_gpu_check_grads_order_2(cuda_backend):
    from jax.test_util import check_grads

    paths = _paths(*SMALL[0])
    with jax.enable_x64(True):
        x, w, sp = _inputs(paths, n=40, c=3, s=3, dtype=np.float64, seed=4)
        check_grads(
            lambda x_, w_: _cuda(x_, w_, sp, paths), (x, w), order=2, modes=["rev"], eps=1e-4
        )


@pytest.mark.gpu
def test_gpu_out_of_range_species_and_backend_choice(monkeypatch):
    paths = _paths(*MP["M"])
    x, w, sp = _inputs(paths, n=200, c=8, s=4, dtype=np.float32, seed=5)
    sp = sp.at[:3].set(jnp.array([-1, 4, 99], jnp.int32))
    out = jax.jit(_cuda, static_argnums=3)(x, w, sp, paths)
    ref = jax.jit(_ref, static_argnums=3)(x, w, sp, paths)
    assert _rel(out, ref) < 2e-5
    assert np.all(np.asarray(out[:3]) == 0.0)
    from jax_mace.symmetric_contraction import dispatch

    monkeypatch.setattr(dispatch, "AUTO_CUDA", True)
    contract(x, w, sp, paths)
    assert last_backend() == "cuda"
    engine = jax.jit(lambda a, b, c: contract(a, b, c, paths, backend="cuda-engine"))(x, w, sp)
    assert last_backend() == "cuda-engine" and _rel(engine, ref) < 2e-5
    monkeypatch.setattr(dispatch, "AUTO_CUDA", False)
    contract(x, w, sp, paths)
    assert last_backend() == "reference"


@pytest.mark.gpu
def test_gpu_many_nodes_one_species_and_vmap(cuda_backend):
    paths = _paths(*MP["S"])
    x, w, sp = _inputs(paths, n=3000, c=32, s=2, dtype=np.float32, seed=6)
    sp = jnp.zeros_like(sp)  # one item per 128 nodes, all one species
    assert _rel(_cuda(x, w, sp, paths), _ref(x, w, sp, paths)) < 2e-5
    xb = jnp.stack([x[:100], x[100:200]])
    spb = jnp.stack([sp[:100], sp[100:200]])
    outb = jax.vmap(lambda a, b: _cuda(a, w, b, paths))(xb, spb)
    refb = jax.vmap(lambda a, b: _ref(a, w, b, paths))(xb, spb)
    assert _rel(outb, refb) < 2e-5


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "num_species"), [(1, 1), (1000, 89), (65537, 89), (5000, 9000)])
def test_gpu_species_sort_groups_every_node_once(n, num_species):
    """perm groups the nodes by species (out-of-range last), each node once; items cover each
    species' run in chunks of <= 128 nodes, in order."""
    import jax_mace
    from jax_mace.symmetric_contraction import cuda as cu

    assert jax_mace.cuda_status().has("jaxk_symcon_sort")  # loads and registers the targets
    rng = np.random.default_rng(n)
    species = rng.integers(-2, num_species + 2, n).astype(np.int32)
    species[: min(n, 300)] = 0  # a long run of one species
    perm, items, nitems = jax.jit(cu._sort, static_argnums=1)(jnp.asarray(species), num_species)
    perm, items, count = np.asarray(perm), np.asarray(items), int(nitems[0])
    assert np.array_equal(np.sort(perm), np.arange(n))
    valid = (species >= 0) & (species < num_species)
    bucket = np.where(valid, species, num_species)
    assert np.all(np.diff(bucket[perm]) >= 0)  # grouped by bucket, out-of-range last
    items = items[:count]
    assert items[0, 1] == 0 and np.all(items[1:, 1] == items[:-1, 1] + items[:-1, 2])
    assert items[-1, 1] + items[-1, 2] == n and np.all((items[:, 2] >= 1) & (items[:, 2] <= 128))
    for s_item, start, size, _ in items:
        want = s_item if s_item >= 0 else num_species
        assert np.all(bucket[perm[start : start + size]] == want)
    expected = sum(-(-c // 128) for c in np.bincount(bucket, minlength=num_species + 1) if c)
    assert count == expected


def _clusters(rng, n_graph, atoms, r_max=5.0, num_species=89):
    """Small random non-periodic structures as padded-batch input."""
    from jax_mace.data.synthetic import random_cluster

    return [random_cluster(rng, atoms, 4.0, 1.2, r_max, num_species) for _ in range(n_graph)]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "cuda-engine"])
def test_gpu_mace_force_training_step_matches_reference(backend):
    """A MACE-MP-medium-like force-training step: CUDA contraction vs the pure-JAX one."""
    from flax import nnx

    from jax_mace.data.graph import pad_graphs
    from jax_mace.model import MACE, predict, preset

    rng = np.random.default_rng(7)
    graphs = _clusters(rng, n_graph=3, atoms=8)
    n_edge = sum(g.num_edges for g in graphs) + 8
    batch = jax.device_put(pad_graphs(graphs, 32, n_edge, 4))

    def step(backend):
        cfg = preset(
            "mp0-medium", hidden_irreps="32x0e+32x1o", r_max=5.0, contraction_backend=backend
        )
        graphdef, state = nnx.split(MACE(cfg, rngs=nnx.Rngs(0)))

        def loss(state_):
            pred = predict(nnx.merge(graphdef, state_), batch)
            e_err = (pred["energy"] - batch.energy) * batch.graph_mask
            f_err = (pred["forces"] - batch.forces) * batch.node_mask[:, None]
            return jnp.mean(e_err**2) + 1000.0 * jnp.mean(f_err**2)

        with jax.default_matmul_precision("highest"):
            return jax.jit(jax.value_and_grad(loss))(state)

    (loss_c, grads_c), (loss_r, grads_r) = step(backend), step("reference")
    assert last_backend() == "reference"
    assert abs(float(loss_c) - float(loss_r)) <= 1e-4 * abs(float(loss_r))
    leaves_c, leaves_r = jax.tree.leaves(grads_c), jax.tree.leaves(grads_r)
    num = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(leaves_c, leaves_r, strict=True))
    den = sum(float(jnp.sum(b**2)) for b in leaves_r)
    assert np.sqrt(num / den) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("grouped", "groups", "chunk", "sync", "inline"),
    [
        (True, 0, 0, 1, False),
        (True, 3, 5, 2, True),
        (True, 2, 1, 0, False),
        (False, 1, 3, 1, True),
        (False, 0, 128, 1, False),
        (False, 0, 0, 1, True),
    ],
)
def test_gpu_launch_shapes_match_reference(monkeypatch, grouped, groups, chunk, sync, inline):
    """Every launch shape (groups per block, nodes per block, barriers) and both code forms
    (inlined output functions with species sums in registers, or calls) give the reference's
    values and first and second derivatives; odd node counts leave groups partly empty."""
    from jax_mace.symmetric_contraction import codegen, jit

    monkeypatch.setattr(codegen, "grouped", lambda program: grouped)
    monkeypatch.setattr(codegen, "inlined", lambda program: inline)
    monkeypatch.setattr(codegen, "sweep_inlined", lambda program: inline)
    monkeypatch.setattr(codegen, "SYNC_LEVEL", sync)
    monkeypatch.setenv("JAX_MACE_SYMJIT_GROUPS", str(groups) if groups else "")
    monkeypatch.setenv("JAX_MACE_SYMJIT_CHUNK", str(chunk) if chunk else "")
    jit.kernel_key.cache_clear()  # the source depends on `grouped` and SYNC_LEVEL
    jax.clear_caches()
    try:
        paths = _paths(*SMALL[0])
        x, w, sp = _inputs(paths, n=203, c=136, s=5, dtype=np.float32, seed=3, pad=7)

        def loss(fn):
            def energy(x_, w_):
                return jnp.sum(fn(x_, w_, sp, paths) ** 2)

            def force_loss(x_, w_):
                return jnp.sum(jax.grad(energy)(x_, w_) ** 2)

            return jax.jit(jax.value_and_grad(force_loss, argnums=(0, 1)))

        def cuda(x_, w_, sp_, p):
            return contract(x_, w_, sp_, p, backend="cuda")

        (v, (gx, gw)), (v_r, (gx_r, gw_r)) = loss(cuda)(x, w), loss(_ref)(x, w)
        assert _rel(v, v_r) < 1e-3 and _rel(gx, gx_r) < 1e-3 and _rel(gw, gw_r) < 1e-3
    finally:
        jit.kernel_key.cache_clear()
        jax.clear_caches()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_unsorted_forward_equals_sorted_forward(monkeypatch, dtype):
    """The forward on nodes in their own order (no sort) gives the sorted kernel's numbers
    bit for bit, zeros for species outside [0, S), on a partial last chunk and channel block."""
    from jax_mace.symmetric_contraction import codegen, jit

    paths = _paths(*MP["M"])
    with jax.enable_x64(dtype == np.float64):
        x, w, sp = _inputs(paths, n=1001, c=136, s=6, dtype=dtype, seed=8, pad=9)
        sp = sp.at[:4].set(jnp.array([-1, 6, 99, -7], jnp.int32))
        outs = []
        for unsorted in (True, False):
            monkeypatch.setattr(codegen, "UNSORTED_FORWARD", unsorted)
            jax.clear_caches()
            assert codegen.unsorted_capable(jit.programs(paths)["fwd"]) is unsorted
            outs.append(np.asarray(jax.jit(_cuda, static_argnums=3)(x, w, sp, paths)))
        jax.clear_caches()
        assert np.array_equal(outs[0], outs[1])
        assert np.all(outs[0][:4] == 0)
        assert _rel(outs[0], _ref(x, w, sp, paths)) < (1e-11 if dtype == np.float64 else 2e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_reverse_sweep_backward_equals_polynomial_backward(monkeypatch, dtype):
    """The backward with gx as a reverse sweep over the forward's monomial trie gives the
    derivative-polynomial kernel's gradients (same sums in another order), zero gradients for
    nodes of species outside [0, S), on a partial last chunk and channel block."""
    from jax_mace.symmetric_contraction import codegen, jit

    monkeypatch.setattr(codegen, "NODES_PER_CALL", 1)
    paths = _paths(*MP["L"])
    with jax.enable_x64(dtype == np.float64):
        x, w, sp = _inputs(paths, n=1001, c=136, s=6, dtype=dtype, seed=9, pad=9)
        sp = sp.at[:4].set(jnp.array([-1, 6, 99, -7], jnp.int32))
        g = jnp.asarray(np.random.default_rng(1).normal(size=(1001, 136, paths.num_out)), dtype)
        grads = []
        for sweep in (True, False):
            monkeypatch.setattr(codegen, "SWEEP", sweep)
            jit.kernel_key.cache_clear()  # the source depends on SWEEP
            jax.clear_caches()
            assert codegen.swept(jit.programs(paths)["bwd"]) is sweep
            vjp = jax.jit(lambda x_, w_: jax.vjp(lambda a, b: _cuda(a, b, sp, paths), x_, w_)[1](g))
            grads.append([np.asarray(v) for v in vjp(x, w)])
        jit.kernel_key.cache_clear()
        jax.clear_caches()
        tol = 1e-12 if dtype == np.float64 else 2e-6
        assert _rel(grads[0][0], grads[1][0]) < tol and _rel(grads[0][1], grads[1][1]) < tol
        assert np.all(grads[0][0][:4] == 0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [MP["S"], MP["L"], SMALL[1]])
def test_gpu_forces_without_weight_gradient(case, dtype):
    """Forces (gradient for x, weights constant) run the gx-only backward on unsorted nodes
    (no species sort) and equal the reference's, with zeros for species outside [0, S), on a
    partial last chunk and channel block."""
    paths = _paths(*case)
    with jax.enable_x64(dtype == np.float64):
        x, w, sp = _inputs(paths, n=1001, c=136, s=6, dtype=dtype, seed=12, pad=9)
        sp = sp.at[:4].set(jnp.array([-1, 6, 99, -7], jnp.int32))
        r = jnp.asarray(np.random.default_rng(4).normal(size=(1001, 136, paths.num_out)), dtype)

        def forces(fn):
            return jax.jit(jax.grad(lambda x_: jnp.sum(fn(x_, w, sp, paths) * r)))

        text = forces(_cuda).lower(x).as_text()
        assert "jaxk_symjit" in text and "jaxk_symcon_sort" not in text
        f, f_r = forces(_cuda)(x), forces(_ref)(x)
        assert _rel(f, f_r) < (1e-11 if dtype == np.float64 else 2e-5)
        assert np.all(np.asarray(f)[:4] == 0)


@pytest.mark.gpu
def test_gpu_symjit_errors_name_the_problem(monkeypatch):
    """The FFI handler refuses a kernel key it has not loaded and a group count that cannot
    launch, with the reason, instead of launching."""
    from jax_mace.symmetric_contraction import codegen, jit

    paths = _paths(*SMALL[1])
    x, w, sp = _inputs(paths, n=40, c=8, s=3, dtype=np.float32, seed=0, pad=0)

    def run():
        jax.clear_caches()
        return jax.block_until_ready(contract(x, w, sp, paths, backend="cuda"))

    with monkeypatch.context() as m:
        m.setattr(jit, "kernel_key", lambda *args: 12345)
        with pytest.raises(Exception, match="not registered"):
            run()
    with monkeypatch.context() as m:
        m.setattr(codegen, "grouped", lambda program: False)  # __launch_bounds__(128)
        m.setenv("JAX_MACE_SYMJIT_GROUPS", "8")
        jit.kernel_key.cache_clear()
        with pytest.raises(Exception, match="does not fit"):
            run()
    jit.kernel_key.cache_clear()
    jax.clear_caches()


@pytest.mark.gpu
def test_gpu_symjit_checks_the_sort_arrays():
    """The FFI handler checks the sort arrays against the nodes before launching: `perm` must
    have one entry per node (sorted or not); `items` [I, 4] and `nitems` [1] only where the
    kernel walks the species sort."""
    import jax_mace
    from jax_mace.symmetric_contraction import cuda as cu
    from jax_mace.symmetric_contraction import jit

    assert jax_mace.cuda_status().has("jaxk_symcon_sort")  # registers the targets (run alone)
    paths = _paths(*SMALL[1])
    x, w, sp = _inputs(paths, n=40, c=8, s=3, dtype=np.float32, seed=0, pad=0)
    g = jnp.ones((40, 8, paths.num_out), jnp.float32)
    perm, items, nitems = cu._sort(sp, w.shape[0])

    def launch(name, node_in, sort):
        outs = jit._launch(paths, name, node_in, [w], sort)
        return jax.block_until_ready(outs)

    with pytest.raises(Exception, match=r"perm \[N\] expected"):
        launch("fwd", [x], (sp[:-1],))  # unsorted: perm carries the species
    with pytest.raises(Exception, match=r"perm \[N\] expected"):
        launch("bwd", [x, g], (perm[:-1], items, nitems))
    with pytest.raises(Exception, match=r"items \[I, 4\] and nitems \[1\] expected"):
        launch("bwd", [x, g], (perm, items[:, :3], nitems))
    with pytest.raises(Exception, match=r"items \[I, 4\] and nitems \[1\] expected"):
        launch("bwd", [x, g], (perm, items, jnp.zeros(2, jnp.int32)))
    (gx,), (gw,) = launch("bwd", [x, g], (perm, items, nitems))  # the same call, well formed
    assert gx.shape == x.shape and gw.shape == w.shape


def _value_and_vjp(fn, paths, sp, g):
    """Jitted ``(x, w) -> (out, gx, gW)`` of ``fn(x, w, sp, paths)`` for cotangent ``g``."""

    def value_and_vjp(x_, w_):
        out, back = jax.vjp(lambda a, b: fn(a, b, sp, paths), x_, w_)
        return (out, *back(g))

    return jax.jit(value_and_vjp)


def _side_sort_run(paths, x, w, sp, g, side_sort, monkeypatch):
    """``[out, gx, gW]`` of the "cuda" backend (NumPy) and its lowered text, with
    ``$JAX_MACE_SYMJIT_SIDE_SORT=side_sort`` (read at trace time)."""
    monkeypatch.setenv("JAX_MACE_SYMJIT_SIDE_SORT", side_sort)
    jax.clear_caches()
    fn = _value_and_vjp(_cuda, paths, sp, g)
    text = fn.lower(x, w).as_text()
    values = [np.asarray(v) for v in fn(x, w)]
    jax.clear_caches()
    return values, text


SIDE_SORT_CASES = [
    (case, dtype) for case in [MP["S"], SMALL[1]] for dtype in [np.float32, np.float64]
]


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "dtype"), SIDE_SORT_CASES)
def test_gpu_side_sort_equals_two_calls(monkeypatch, case, dtype):
    """Forward + VJP with the species sort on a side stream during the forward (one call) vs
    the separate sort call: out and gx bit for bit; gW equal up to the order of the kernel's
    atomic weight sums (nodes of a species reach the backward in the order of the sort's
    atomic scatter, which differs from run to run in either mode: see the next test for a
    layout where gW is exact); zeros for species outside [0, S), a partial last chunk and
    channel block; both equal the reference."""
    paths = _paths(*case)
    with jax.enable_x64(dtype == np.float64):
        x, w, sp = _inputs(paths, n=1001, c=136, s=6, dtype=dtype, seed=13, pad=9)
        sp = sp.at[:4].set(jnp.array([-1, 6, 99, -7], jnp.int32))
        g = jnp.asarray(np.random.default_rng(5).normal(size=(1001, 136, paths.num_out)), dtype)
        (out, gx, gw), text = _side_sort_run(paths, x, w, sp, g, "1", monkeypatch)
        assert "jaxk_symjit_side_sort" in text and "jaxk_symcon_sort" not in text
        (out0, gx0, gw0), text0 = _side_sort_run(paths, x, w, sp, g, "0", monkeypatch)
        assert "jaxk_symjit_side_sort" not in text0 and "jaxk_symcon_sort" in text0
        assert np.array_equal(out, out0) and np.array_equal(gx, gx0)
        assert _rel(gw, gw0) < (1e-13 if dtype == np.float64 else 1e-6)
        assert np.all(out[:4] == 0) and np.all(gx[:4] == 0)
        tol = 1e-11 if dtype == np.float64 else 2e-5
        for value, ref in zip((out, gx, gw), _value_and_vjp(_ref, paths, sp, g)(x, w), strict=True):
            assert _rel(value, ref) < tol


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "dtype"), SIDE_SORT_CASES)
def test_gpu_side_sort_weight_gradient_bit_for_bit(monkeypatch, case, dtype):
    """Where the weight sums do not depend on the sort's scatter order, the side-sort path's gW
    equals the two-call path's bit for bit: each species' nodes lie in one 32-node window (one
    warp of the scatter: a fixed order in the bucket) and a block takes a whole work item
    (`_CHUNK=128`: one atomic add per species onto the zeroed buffer). 32-node items are
    partial chunks; the last window holds species outside [0, S); 136 channels."""
    paths = _paths(*case)
    monkeypatch.setenv("JAX_MACE_SYMJIT_CHUNK", "128")
    s, n = 6, 7 * 32 - 11
    with jax.enable_x64(dtype == np.float64):
        x, w, _ = _inputs(paths, n=n, c=136, s=s, dtype=dtype, seed=14)
        species = np.arange(n) // 32
        species[s * 32 :] = np.resize([-1, s, 99], n - s * 32)
        sp = jnp.asarray(species, jnp.int32)
        g = jnp.asarray(np.random.default_rng(6).normal(size=(n, 136, paths.num_out)), dtype)
        on, _ = _side_sort_run(paths, x, w, sp, g, "1", monkeypatch)
        off, _ = _side_sort_run(paths, x, w, sp, g, "0", monkeypatch)
        for a, b in zip(on, off, strict=True):
            assert np.array_equal(a, b)
        assert np.all(on[0][s * 32 :] == 0) and np.all(on[1][s * 32 :] == 0)


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "num_species"), [(1, 1), (1001, 6), (65537, 89)])
def test_gpu_side_sort_arrays_equal_the_sort_call(n, num_species):
    """The side-sort call's arrays: the forward of the two-call path bit for bit, the sort call's
    items and item count exactly, a perm with the same species grouping (its order inside a
    species follows the scatter's atomics), and an all-zero weight-gradient buffer."""
    import jax_mace
    from jax_mace.symmetric_contraction import cuda as cu
    from jax_mace.symmetric_contraction import jit

    assert jax_mace.cuda_status().has("jaxk_symjit_side_sort")  # registers the targets
    paths = _paths(*MP["S"])
    x, w, sp = _inputs(paths, n=n, c=8, s=num_species, dtype=np.float32, seed=n)
    if n > 4:
        sp = sp.at[:4].set(jnp.array([-1, num_species, 99, -7], jnp.int32))
    out, (perm, items, nitems), gw0 = jax.jit(
        lambda x_, w_, s_: jit._forward_side_sort(paths, x_, w_, s_)
    )(x, w, sp)
    out_ref = jax.jit(lambda x_, w_, s_: jit._forward(paths, x_, w_, s_))(x, w, sp)
    perm_r, items_r, nitems_r = jax.jit(cu._sort, static_argnums=1)(sp, num_species)
    assert np.array_equal(np.asarray(out), np.asarray(out_ref))
    count = int(nitems[0])
    assert count == int(nitems_r[0])
    assert np.array_equal(np.asarray(items)[:count], np.asarray(items_r)[:count])
    perm, species = np.asarray(perm), np.asarray(sp)
    assert np.array_equal(np.sort(perm), np.arange(n))
    bucket = np.where((species >= 0) & (species < num_species), species, num_species)
    assert np.array_equal(bucket[perm], bucket[np.asarray(perm_r)])
    assert gw0.shape == w.shape and np.all(np.asarray(gw0) == 0)


def _grad_of_loss_on_first_derivatives(fn, sp, paths, r):
    """``(x, W) -> (dx, dW)``: the gradient of ``|dE/dx|^2 + |dE/dW|^2 + E`` with the energy
    ``E = <fn(x, W), r> + 0.1 |fn(x, W)|^2``; unjitted. Differentiates the VJP again, through
    every derivative program (forward, backward, second derivatives)."""

    def energy(x_, w_):
        out = fn(x_, w_, sp, paths)
        return jnp.sum(out * r) + 0.1 * jnp.sum(out**2)

    def total(x_, w_):
        gx, gw = jax.grad(energy, argnums=(0, 1))(x_, w_)
        return jnp.sum(gx**2) + jnp.sum(gw**2) + energy(x_, w_)

    return jax.grad(total, argnums=(0, 1))


@pytest.mark.gpu
@pytest.mark.parametrize("case", [MP["S"], SMALL[0]])
def test_gpu_side_sort_second_derivatives_match_reference(monkeypatch, case):
    """grad over (x, W) of a loss on both first derivatives (forces and the weight gradient):
    the side-sort call is itself differentiated (its output through the custom VJP, reusing its
    sort). Both modes equal the reference."""
    paths = _paths(*case)
    with jax.enable_x64(True):
        x, w, sp = _inputs(paths, n=150, c=8, s=5, dtype=np.float64, seed=15, pad=3)
        sp = sp.at[:2].set(jnp.array([-1, 5], jnp.int32))
        r = jnp.asarray(np.random.default_rng(7).normal(size=(150, 8, paths.num_out)))

        def loss(fn):
            return jax.jit(_grad_of_loss_on_first_derivatives(fn, sp, paths, r))

        dx_r, dw_r = loss(_ref)(x, w)
        for side_sort in ("1", "0"):
            monkeypatch.setenv("JAX_MACE_SYMJIT_SIDE_SORT", side_sort)
            jax.clear_caches()
            dx, dw = loss(lambda *a: contract(*a, backend="cuda"))(x, w)
            assert _rel(dx, dx_r) < 1e-10 and _rel(dw, dw_r) < 1e-10
        jax.clear_caches()


@pytest.mark.gpu
def test_gpu_side_sort_errors_name_the_call(monkeypatch):
    """The side-sort handler checks its kernel before forking, and its errors name the call."""
    from jax_mace.symmetric_contraction import jit

    paths = _paths(*SMALL[1])
    x, w, sp = _inputs(paths, n=40, c=8, s=3, dtype=np.float32, seed=0)
    monkeypatch.setenv("JAX_MACE_SYMJIT_SIDE_SORT", "1")
    monkeypatch.setattr(jit, "kernel_key", lambda *args: 12345)
    jax.clear_caches()
    grad = jax.jit(jax.grad(lambda a, b: jnp.sum(contract(a, b, sp, paths, backend="cuda")), 1))
    with pytest.raises(Exception, match="jaxk_symjit_side_sort: kernel 12345 is not registered"):
        jax.block_until_ready(grad(x, w))
    jax.clear_caches()


@pytest.mark.gpu
def test_gpu_side_sort_checks_its_outputs():
    """jaxk_symjit_side_sort checks the sort's outputs and the zeroed weight-gradient buffer
    ([S, k, C] in the node dtype) before it forks, and names the call and the rule."""
    import jax_mace
    from jax_mace.symmetric_contraction import cuda as cu
    from jax_mace.symmetric_contraction import jit

    assert jax_mace.cuda_status().has(jit.SIDE_SORT_TARGET)  # registers the targets
    paths = _paths(*SMALL[1])
    x, w, sp = _inputs(paths, n=300, c=8, s=3, dtype=np.float32, seed=0)
    n, c, _ = x.shape
    s = w.shape[0]
    (gw_width,) = [len(a) for a in jit.programs(paths)["bwd"].species_out]

    def side_sort(items_rows: int, zeroed_shape, zeroed_dtype=jnp.float32, **override):
        perm, items, nitems, work = cu.sort_shapes(n, s)
        shapes = jit._out_shapes([paths.num_out], lambda m: (n, c, m), jnp.float32)
        shapes += [perm, jax.ShapeDtypeStruct((items_rows, 4), jnp.int32), nitems, work]
        shapes.append(jax.ShapeDtypeStruct(zeroed_shape, zeroed_dtype))
        call = jax.ffi.ffi_call(jit.SIDE_SORT_TARGET, shapes, vmap_method="sequential")
        attrs = {**jit._kernel_attrs(paths, "fwd", jnp.float32, False), **override}
        return jax.block_until_ready(
            call(sp.astype(jnp.int32), *jit._padded([x], 3, x.dtype), w, w, **attrs)
        )

    good_rows = cu.sort_shapes(n, s)[1].shape[0]
    side_sort(good_rows, (s, gw_width, c))  # well formed
    with pytest.raises(Exception, match=r"jaxk_symjit_side_sort: species sort: items must have"):
        side_sort(good_rows - 1, (s, gw_width, c))
    with pytest.raises(Exception, match=r"the zeroed buffer must be \[S, k, C\] in the node dtype"):
        side_sort(good_rows, (s, gw_width, c + 1))
    with pytest.raises(Exception, match=r"the zeroed buffer must be \[S, k, C\] in the node dtype"):
        side_sort(good_rows, (s, gw_width, c), jnp.float64)
    with pytest.raises(Exception, match=r"side_sort: a species array \(S\) is required"):
        side_sort(good_rows, (s, gw_width, c), sin_widths=np.zeros((0,), np.int64))


@pytest.mark.gpu
def test_gpu_symjit_checks_the_zeroed_alias(monkeypatch):
    """A launch told that its species output 0 arrives zeroed (sout0_zeroed) refuses a program
    without species outputs, and an output buffer that is not its zeroed input (no
    input_output_aliases), instead of accumulating into uninitialised memory."""
    import jax_mace
    from jax_mace.symmetric_contraction import cuda as cu
    from jax_mace.symmetric_contraction import jit

    assert jax_mace.cuda_status().has(jit.TARGET)  # registers the targets
    paths = _paths(*SMALL[1])
    x, w, sp = _inputs(paths, n=40, c=8, s=3, dtype=np.float32, seed=0, pad=0)
    g = jnp.ones((40, 8, paths.num_out), jnp.float32)
    sort = cu._sort(sp, w.shape[0])
    ffi_call = jax.ffi.ffi_call

    def without_aliases(*args, **kwargs):
        kwargs.pop("input_output_aliases", None)
        return ffi_call(*args, **kwargs)

    monkeypatch.setattr(jax.ffi, "ffi_call", without_aliases)
    with pytest.raises(Exception, match=r"jaxk_symjit: species output 0 must alias its zeroed"):
        jax.block_until_ready(jit._launch(paths, "bwd", [x, g], [w], sort, jnp.zeros_like(w)))
    with pytest.raises(Exception, match=r"jaxk_symjit: sout0_zeroed without a species output"):
        jax.block_until_ready(jit._launch(paths, "fwd", [x], [w], (sp,), jnp.zeros_like(w)))


# XLA records a run of command-buffer-compatible operations as one CUDA graph (a command buffer)
# when the run has at least `xla_gpu_graph_min_graph_size` operations; FFI handlers join such runs
# when they declare the trait, and are recorded by capturing what they enqueue. GRAPHS_ON makes
# every run a graph; GRAPHS_OFF records none.
GRAPHS_ON = {
    "xla_gpu_graph_min_graph_size": 1,
    "xla_gpu_enable_command_buffer": "FUSION,CUSTOM_CALL",
}
GRAPHS_OFF = {"xla_gpu_enable_command_buffer": ""}
GRAPH_TARGETS = {
    "cuda": {"jaxk_symjit_side_sort", "jaxk_symjit"},
    "cuda-engine": {
        "jaxk_symcon_sort",
        "jaxk_symcon_tbase",
        "jaxk_symcon_wgrad",
        "jaxk_symcon_engine",
    },
}


def _reported(text: str, how: str) -> set[str]:
    """The FFI calls that ``$JAX_MACE_DEBUG=1`` reported on stderr as ``how`` ("launched" or
    "recorded into a CUDA graph")."""
    return {m.group(1) for m in re.finditer(rf"^(jaxk_\w+): {how}$", text, re.M)}


@pytest.mark.gpu
def test_gpu_command_buffers_record_and_replay_the_kernels(monkeypatch, capfd, cuda_backend):
    """The gradient of a loss on both first derivatives, forced into XLA's command buffers: every
    FFI call is recorded into a CUDA graph (as the handlers report under JAX_MACE_DEBUG=1; on
    "cuda" the forward's side-stream fork and join are captured as two branches of the graph),
    and the results equal the same function without command buffers (every call launched) and
    the reference: when recorded, again on the same arrays and on new arrays."""
    monkeypatch.setenv("JAX_MACE_SYMJIT_SIDE_SORT", "1")
    monkeypatch.setenv("JAX_MACE_DEBUG", "1")
    jax.clear_caches()
    paths = _paths(*MP["S"])
    with jax.enable_x64(True):
        x, w, sp = _inputs(paths, n=700, c=24, s=5, dtype=np.float64, seed=21, pad=3)
        sp = sp.at[:2].set(jnp.array([-1, 5], jnp.int32))
        r = jnp.asarray(np.random.default_rng(8).normal(size=(700, 24, paths.num_out)))

        def grad_of(fn):
            return _grad_of_loss_on_first_derivatives(fn, sp, paths, r)

        graphs = jax.jit(grad_of(_cuda), compiler_options=GRAPHS_ON)
        plain = jax.jit(grad_of(_cuda), compiler_options=GRAPHS_OFF)
        ref = jax.jit(grad_of(_ref))
        want = ref(x, w)
        capfd.readouterr()
        # XLA runs a command buffer's operations one by one on its first execution (the calls
        # report "launched") and records the graph on the second.
        got = [jax.block_until_ready(graphs(x, w)) for _ in range(2)][-1]
        err = capfd.readouterr().err
        assert _reported(err, "recorded into a CUDA graph") == GRAPH_TARGETS[cuda_backend]
        plain_got = [jax.block_until_ready(plain(x, w)) for _ in range(2)][-1]
        err = capfd.readouterr().err
        assert _reported(err, "launched") == GRAPH_TARGETS[cuda_backend]
        assert not _reported(err, "recorded into a CUDA graph")
        for a, b, c in zip(got, plain_got, want, strict=True):
            assert _rel(a, b) < 1e-12 and _rel(a, c) < 1e-10
        for x_, w_ in [(x, w), (0.5 * x, w + 0.1), (x, w)]:
            got, want = graphs(x_, w_), ref(x_, w_)
            for a, c in zip(got, want, strict=True):
                assert _rel(a, c) < 1e-10
    jax.clear_caches()


@pytest.mark.gpu
@pytest.mark.parametrize("options", [GRAPHS_ON, GRAPHS_OFF], ids=["graphs", "no_graphs"])
def test_gpu_side_sort_from_two_threads(monkeypatch, options):
    """Forward + VJP with the side-stream sort, called from two threads at once, each cycling
    through four input sets: every result equals the single-threaded one (out and gx bit for
    bit, gW up to the order of its atomic sums). Each thread forks onto a side stream of its
    own, which a graph capture on another thread cannot take in."""
    monkeypatch.setenv("JAX_MACE_SYMJIT_SIDE_SORT", "1")
    jax.clear_caches()
    paths = _paths(*MP["S"])
    n, c = 2000, 32
    g = jnp.asarray(np.random.default_rng(9).normal(size=(n, c, paths.num_out)), jnp.float32)

    def value_and_vjp(x_, w_, sp_):
        out, back = jax.vjp(lambda a, b: _cuda(a, b, sp_, paths), x_, w_)
        return (out, *back(g))

    fn = jax.jit(value_and_vjp, compiler_options=options)
    inputs = [_inputs(paths, n=n, c=c, s=7, dtype=np.float32, seed=30 + i) for i in range(4)]
    expected = [[np.asarray(v) for v in fn(*args)] for args in inputs]
    failures = []

    def worker(offset):
        try:
            for step in range(24):
                i = (step + offset) % len(inputs)
                got = [np.asarray(v) for v in fn(*inputs[i])]
                want = expected[i]
                exact = np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
                if not exact or _rel(got[2], want[2]) > 1e-6:
                    failures.append((offset, step))
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            failures.append((offset, repr(err)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    jax.clear_caches()
