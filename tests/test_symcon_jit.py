"""Specialised symmetric-contraction kernels (backend "cuda"): the CPU-checkable parts.

The programs (polynomials) are compared with autodiff of the pure-JAX reference; the Horner
tries the code generator emits are evaluated in Python against the polynomials; the generated
CUDA source is compiled for sm_90a when nvcc is present. Kernel-vs-reference checks on the GPU
live in ``test_symcon_cuda.py`` (parametrised over both CUDA backends).
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mace.symmetric_contraction import codegen, reverse_sweep
from jax_mace.symmetric_contraction import polynomial as poly
from jax_mace.symmetric_contraction.dispatch import contract
from jax_mace.symmetric_contraction.paths import build_path_list
from jax_mace.symmetric_contraction.reference import symmetric_contraction

LMAX3 = "0e+1o+2e+3o"
CASES = [
    ("0e+1o", "0e+1o+2e", 3),
    ("1o+2e", "1o", 2),
    ("0e+2e", "0e+2e", 1),
    ("0e", "0e", 3),
    (LMAX3, "0e+1o", 3),
]


@functools.cache
def _paths(irreps_in, irreps_out, corr):
    return build_path_list(irreps_in, irreps_out, corr)


def _random_inputs(paths, seed, n=9, c=3, s=4):
    rng = np.random.default_rng(seed)
    k, m, nw = paths.num_in, paths.num_out, paths.num_weights
    x = rng.normal(size=(n, c, k))
    w = rng.normal(size=(s, nw, c))
    species = rng.integers(0, s, n)
    species[:2] = [-1, s]  # out of range: zero outputs, no weight gradient
    g = rng.normal(size=(n, c, m))
    hx = rng.normal(size=(n, c, k))
    hw = rng.normal(size=(s, nw, c))
    return x, w, species, g, hx, hw


@pytest.mark.parametrize("case", CASES)
def test_programs_match_autodiff_of_reference(case):
    paths = _paths(*case)
    progs = poly.programs(paths)
    x, w, species, g, hx, hw = _random_inputs(paths, seed=len(case[1]))
    with jax.enable_x64(True):
        sp = jnp.asarray(species)

        def f(x_, w_):
            return symmetric_contraction(x_, w_, sp, paths)

        def vjp(x_, w_, g_):
            return jax.vjp(f, x_, w_)[1](g_)

        (out,), _ = poly.evaluate(progs["fwd"], [x], [w], species)
        np.testing.assert_allclose(out, f(x, w), rtol=1e-12, atol=1e-12)
        assert np.all(out[:2] == 0.0)

        gx_ref, gw_ref = vjp(x, w, g)
        (gx,), (gw,) = poly.evaluate(progs["bwd"], [x, g], [w], species)
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(gw, gw_ref, rtol=1e-11, atol=1e-11)

        dx_ref, dw_ref, dg_ref = jax.vjp(vjp, x, w, g)[1]((hx, hw))
        (dx, dg), (dw,) = poly.evaluate(progs["bwd2"], [x, g, hx], [w, hw], species)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dg, dg_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10)


def test_program_shapes_and_sizes():
    paths = _paths(LMAX3, "0e+1o+2e", 3)
    progs = poly.programs(paths)
    k, m, nw = paths.num_in, paths.num_out, paths.num_weights
    assert progs["fwd"].node_in == (k,) and progs["fwd"].species_in == (nw,)
    assert [len(a) for a in progs["bwd"].node_out] == [k]
    assert [len(a) for a in progs["bwd"].species_out] == [nw]
    assert [len(a) for a in progs["bwd2"].node_out] == [k, m]
    assert progs["fwd"].num_monomials == paths.num_paths  # one monomial per path (W included)


@pytest.mark.parametrize("case", CASES[:3])
def test_horner_tries_equal_the_polynomials(case):
    paths = _paths(*case)
    rng = np.random.default_rng(11)
    values: dict[int, float] = {}

    def env(var):
        if var not in values:
            values[var] = rng.normal()
        return values[var]

    for prog in poly.programs(paths).values():
        for arrays in (prog.node_out, prog.species_out):
            for array in arrays:
                for p in array:
                    trie = codegen.build_trie(p)
                    direct = sum(c * np.prod([env(v) for v in mono]) for mono, c in p.items())
                    assert trie.value(env) == pytest.approx(direct, rel=1e-12, abs=1e-12)
                    assert trie.edges() <= sum(len(mono) for mono in p)


@pytest.mark.parametrize("case", CASES + [(LMAX3, "0e+1o+2e", 3)])
def test_reverse_sweep_equals_the_derivative_polynomials(case):
    """The backward's gx as a reverse sweep over the forward's monomial trie (NumPy meaning of
    the steps the kernel runs) equals the 16 derivative polynomials it replaces."""
    paths = _paths(*case)
    bwd = poly.programs(paths)["bwd"]
    rng = np.random.default_rng(len(case[1]))
    values: dict[int, np.ndarray] = {}

    def value(var):
        if var not in values:
            values[var] = rng.normal(size=7)
        return values[var]

    gx = reverse_sweep.evaluate(bwd, value, paths.num_in)
    for comp, p in enumerate(bwd.node_out[0]):
        direct = sum((c * np.prod([value(v) for v in m], axis=0) for m, c in p.items()), 0.0)
        np.testing.assert_allclose(gx[comp], direct, rtol=1e-10, atol=1e-10)
    functions = reverse_sweep.plan(bwd)
    assert [f.first for f in functions] == sorted({f.first for f in functions})
    assert all(set(f.touched) <= set(range(paths.num_in)) for f in functions)


def test_sweep_only_where_it_is_cheaper(monkeypatch):
    monkeypatch.setattr(codegen, "NODES_PER_CALL", 1)
    large = poly.programs(_paths(LMAX3, "0e+1o+2e", 3))
    small = poly.programs(_paths(LMAX3, "0e", 3))
    assert codegen.swept(large["bwd"])
    assert not codegen.swept(small["bwd"])  # its 16 derivative polynomials are shorter
    assert not any(codegen.swept(large[name]) for name in ("fwd", "bwd2"))  # no sweep to run
    src = codegen.generate(large["bwd"], "float")
    assert "sweep0_0(nv, srow0, srow1, cs);" in src and "node_out0_0" not in src
    smem = codegen.smem_bytes(large["bwd"], "float")
    size = codegen.code_bytes(large["bwd"])
    monkeypatch.setattr(codegen, "SWEEP", False)
    assert not codegen.swept(large["bwd"])
    assert smem - codegen.smem_bytes(large["bwd"], "float") == 16 * codegen.BLOCK_THREADS * 4
    assert codegen.code_bytes(large["bwd"]) > size
    assert "sweep0_0" not in codegen.generate(large["bwd"], "float")
    monkeypatch.setattr(codegen, "SWEEP", True)
    monkeypatch.setattr(codegen, "NODES_PER_CALL", 2)
    assert not codegen.swept(large["bwd"])  # the sweep evaluates one node per call


def test_no_loop_barrier_for_small_inlined_kernels(monkeypatch):
    """Small fully inlined kernels (MACE-MP-S) run their node loop without a barrier; larger ones
    keep one per loop step; JAX_MACE_SYMJIT_SYNC forces a level for all."""
    monkeypatch.setattr(codegen, "SYNC_LEVEL", None)
    monkeypatch.setattr(codegen, "NODES_PER_CALL", 1)
    small = poly.programs(_paths(LMAX3, "0e", 3))
    medium = poly.programs(_paths(LMAX3, "0e+1o", 3))
    assert [codegen.sync_level(small[n]) for n in ("fwd", "bwd", "bwd_x")] == [0, 0, 0]
    assert codegen.sync_level(small["bwd2"]) == 1 and codegen.sync_level(medium["fwd"]) == 1
    # the species sums' flush keeps its barrier
    assert codegen.generate(small["bwd"], "float").count("__syncthreads()") == 1
    monkeypatch.setattr(codegen, "SYNC_LEVEL", 1)
    assert codegen.generate(small["bwd"], "float").count("__syncthreads()") == 2


def test_small_kernels_on_unsorted_nodes_take_two_nodes_per_block(monkeypatch):
    """MACE-MP-S's forward and bwd_x on unsorted nodes launch 2 nodes per block; larger
    kernels and by-species launches leave the chunk to the launcher (0); the environment
    override wins everywhere."""
    from jax_mace.symmetric_contraction import jit

    monkeypatch.setattr(codegen, "NODES_PER_CALL", 1)
    monkeypatch.delenv("JAX_MACE_SYMJIT_CHUNK", raising=False)
    monkeypatch.setattr(jit, "kernel_key", lambda *args: 0)  # no compilation here
    small, medium = _paths(LMAX3, "0e", 3), _paths(LMAX3, "0e+1o", 3)
    chunk = lambda paths, name, by_species: int(  # noqa: E731
        jit._kernel_attrs(paths, name, jnp.float32, by_species)["chunk"]
    )
    assert chunk(small, "fwd", False) == chunk(small, "bwd_x", False) == 2
    assert chunk(small, "fwd", True) == chunk(small, "bwd", True) == 0
    assert chunk(medium, "fwd", False) == 0
    monkeypatch.setenv("JAX_MACE_SYMJIT_CHUNK", "7")
    assert chunk(small, "fwd", False) == chunk(medium, "fwd", False) == 7


@pytest.mark.parametrize("by_species", [True, False])
def test_small_kernels_hold_node_values_in_registers(monkeypatch, by_species):
    """MACE-MP-S's kernels read their node values from a register array (constant indices
    only), not from their shared-memory column; larger kernels, and all with
    JAX_MACE_SYMJIT_REGISTER_NODES=0, stage them in shared memory."""
    import re

    monkeypatch.setattr(codegen, "NODES_PER_CALL", 1)
    small = poly.programs(_paths(LMAX3, "0e", 3))
    medium = poly.programs(_paths(LMAX3, "0e+1o", 3))
    names = ("fwd", "bwd_x") if not by_species else ("fwd", "bwd", "bwd_x")
    for name in names:
        assert codegen.register_nodes(small[name]), name
        src = codegen.generate(small[name], "float", by_species)
        nodes = sum(small[name].node_in)  # x (16 values), then g where the program reads it
        assert f"float nr[{nodes}];" in src
        # every node value written and read through constant indices; none through smem slots
        assert not re.search(r"= nv\[\d+\];", src), name
        assert re.findall(r"nr\[(\d+)\] = v\.[xyzw];", src) == [str(i) for i in range(16)]
        assert ("nr[16] = __ldg(" in src) is (nodes == 17) and "nr[j] = 0;" in src
    assert not codegen.register_nodes(small["bwd2"])
    assert not codegen.register_nodes(medium["fwd"])
    assert "nr[" not in codegen.generate(medium["fwd"], "float")
    monkeypatch.setattr(codegen, "REGISTER_NODES", False)
    assert not codegen.register_nodes(small["bwd"])
    src = codegen.generate(small["fwd"], "float", by_species)
    assert "nr[" not in src and re.search(r"= nv\[\d+\];", src)


def test_launch_bounds_by_code_size(monkeypatch):
    monkeypatch.setattr(codegen, "MIN_BLOCKS", None)
    monkeypatch.setattr(codegen, "NODES_PER_CALL", 1)
    large = poly.programs(_paths(LMAX3, "0e+1o+2e", 3))
    bwd = large["bwd"]
    assert codegen.inlined(bwd) and codegen.sweep_inlined(bwd)
    assert codegen.code_bytes(bwd) > codegen.LARGE_INLINED_CODE_BYTES
    assert codegen.min_blocks(bwd) == 3  # large and fully inlined
    assert "__launch_bounds__(128, 3)" in codegen.generate(bwd, "float")
    medium = poly.programs(_paths(LMAX3, "0e+1o", 3))
    assert 48 * 1024 < codegen.code_bytes(medium["bwd"]) < 64 * 1024
    assert codegen.min_blocks(medium["bwd"]) == 3  # MACE-MP-M's backward: 3 won on H100
    assert codegen.min_blocks(medium["fwd"]) == 4
    monkeypatch.setattr(codegen, "SWEEP_INLINE_CODE_BYTES", 0)
    assert codegen.min_blocks(bwd) == 4  # sweep functions called
    assert codegen.min_blocks(poly.programs(_paths(*CASES[0]))["bwd2"]) == 4
    small = poly.programs(_paths(LMAX3, "0e", 3))["bwd"]
    assert codegen.code_bytes(small) <= codegen.SMALL_INLINED_CODE_BYTES
    assert codegen.min_blocks(small) == 6  # small and fully inlined
    bwd2 = large["bwd2"]
    assert codegen.code_bytes(bwd2) > codegen.CAPPED_CODE_BYTES
    assert codegen.min_blocks(bwd2) == 0  # capping would spill heavily
    monkeypatch.setattr(codegen, "MIN_BLOCKS", 5)
    assert codegen.min_blocks(bwd) == 5 and codegen.min_blocks(bwd2) == 0


def test_sweep_requires_a_sweep():
    with pytest.raises(ValueError, match="has no sweep"):
        reverse_sweep.plan(poly.programs(_paths(*CASES[0]))["fwd"])


def test_literals_round_trip():
    em32, em64 = codegen._Emitter("float"), codegen._Emitter("double")
    for v in [0.1, -1.0 / 3.0, 1e-30, 12345.678, np.sqrt(2.0)]:
        assert np.float32(float(em32.literal(v)[:-1])) == np.float32(v)
        assert float(em64.literal(v)) == v


def test_generated_source_structure(monkeypatch):
    monkeypatch.setattr(codegen, "INLINE_CODE_BYTES", 0)
    monkeypatch.setattr(codegen, "MIN_BLOCKS", None)
    paths = _paths(*CASES[0])
    src = codegen.generate(poly.programs(paths)["bwd2"], "float")
    assert not codegen.grouped(poly.programs(paths)["bwd2"])
    assert f'extern "C" __global__ void __launch_bounds__(128, 4) {codegen.KERNEL_NAME}(' in src
    assert "blockDim.y" in src and "__syncthreads();" in src
    assert codegen.ARGS_STRUCT in src
    assert "atomicAdd" in src and "__noinline__" in src
    assert codegen.source_key(src) == codegen.source_key(src) > 0
    with pytest.raises(ValueError, match="ctype"):
        codegen.generate(poly.programs(paths)["fwd"], "half")


def test_grouped_kernels_by_code_size(monkeypatch):
    paths = _paths(*CASES[0])
    prog = poly.programs(paths)["fwd"]
    lo, hi = codegen.GROUPED_CODE_BYTES
    for size, grouped in ((lo - 1, False), (lo, True), (hi, True), (hi + 1, False)):
        monkeypatch.setattr(codegen, "code_bytes", lambda p, size=size: size)
        assert codegen.grouped(prog) is grouped
        src = codegen.generate(prog, "float")
        # grouped: any blockDim.y, outputs stored where computed; else one group, vector stores
        assert ("__launch_bounds__" not in src) is grouped
        m = len(prog.node_out[0])
        assert (f"[row0 * {m} + 0] = o0_0.v[0];" in src) is grouped


def test_inlined_kernels_by_code_size(monkeypatch):
    """Output functions and reverse-sweep functions are inlined by their own code sizes."""
    monkeypatch.setattr(codegen, "NODES_PER_CALL", 1)
    prog = poly.programs(_paths(*CASES[0]))["bwd"]
    assert codegen.swept(prog)
    polys, sweep = codegen._part_bytes(prog, True, 1)
    assert polys + sweep == codegen.code_bytes(prog)
    monkeypatch.setattr(codegen, "INLINE_CODE_BYTES", polys)
    monkeypatch.setattr(codegen, "SWEEP_INLINE_CODE_BYTES", sweep)
    assert codegen.inlined(prog) and codegen.sweep_inlined(prog)
    src = codegen.generate(prog, "float")
    assert "__noinline__" not in src and "__forceinline__ void sweep0_0(" in src
    assert "sacc0_0 = 0;" in src and "sacc0_0 += v.v[0]" in src
    monkeypatch.setattr(codegen, "INLINE_CODE_BYTES", polys - 1)
    assert not codegen.inlined(prog)
    src = codegen.generate(prog, "float")
    assert "__forceinline__ Vals" not in src and "sacc" not in src
    assert "__forceinline__ void sweep0_0(" in src
    monkeypatch.setattr(codegen, "SWEEP_INLINE_CODE_BYTES", sweep - 1)
    assert "__noinline__ void sweep0_0(" in codegen.generate(prog, "float")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize("inline", [False, True])
def test_generated_source_compiles_for_sm90a_grouped(tmp_path, monkeypatch, inline):
    paths = _paths(*CASES[0])
    monkeypatch.setattr(codegen, "grouped", lambda p: True)
    monkeypatch.setattr(codegen, "inlined", lambda p: inline)
    for name, prog in poly.programs(paths).items():
        src = tmp_path / f"{name}.cu"
        src.write_text(codegen.generate(prog, "float"))
        run = subprocess.run(
            ["nvcc", "-arch=sm_90a", "-cubin", "-o", str(tmp_path / f"{name}.cubin"), str(src)],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize("ctype", ["float", "double"])
def test_generated_source_compiles_for_sm90a(tmp_path, ctype):
    paths = _paths(*CASES[0])
    sources = {name: codegen.generate(p, ctype) for name, p in poly.programs(paths).items()}
    if codegen.unsorted_capable(poly.programs(paths)["fwd"]):
        sources["fwd_unsorted"] = codegen.generate(poly.programs(paths)["fwd"], ctype, False)
    for name, text in sources.items():
        src = tmp_path / f"{name}.cu"
        src.write_text(text)
        run = subprocess.run(
            [
                "nvcc",
                "-arch=sm_90a",
                "-cubin",
                "-Xptxas",
                "-v",
                "-o",
                str(tmp_path / "k.cubin"),
                str(src),
            ],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert "spill stores" in run.stderr


def test_forward_alone_runs_without_the_species_sort(monkeypatch):
    """A forward-only call launches the unsorted forward kernel (species as `perm`, no sort);
    the sort appears once the weights are differentiated (in the side-sort call by default)."""
    from jax_mace.symmetric_contraction import jit

    monkeypatch.setattr(jit, "unavailable_reason", lambda *a: None)
    monkeypatch.setattr(jit, "kernel_key", lambda paths, name, ctype, *_: 77)
    paths = _paths(*CASES[0])
    assert codegen.unsorted_capable(poly.programs(paths)["fwd"]) == (codegen.NODES_PER_CALL == 1)
    x = jnp.ones((10, 4, paths.num_in))
    w = jnp.ones((3, paths.num_weights, 4))
    sp = jnp.zeros((10,), jnp.int32)

    def lower(fn):
        return jax.jit(fn).trace(x, w).lower(lowering_platforms=("cuda",)).as_text()

    forward = lower(lambda a, b: jit.symmetric_contraction_jit(a, b, sp, paths))
    assert "jaxk_symjit" in forward and "by_species = 0" in forward
    assert "jaxk_symcon_sort" not in forward
    assert jit.SIDE_SORT_TARGET not in forward
    grad = lower(
        jax.grad(lambda a, b: jnp.sum(jit.symmetric_contraction_jit(a, b, sp, paths)), (0, 1))
    )
    sort = jit.SIDE_SORT_TARGET if jit.side_sort(paths) else "jaxk_symcon_sort"
    assert sort in grad and "by_species = 1" in grad


def test_force_inference_gradient_runs_without_the_species_sort(monkeypatch):
    """Forces (the gradient for x with the weights constant) launch the forward and the
    gx-only backward on unsorted nodes; with the weights differentiated, the full backward and
    the sort come back."""
    from jax_mace.symmetric_contraction import jit

    monkeypatch.setattr(jit, "unavailable_reason", lambda *a: None)
    monkeypatch.setattr(jit, "kernel_key", lambda paths, name, ctype, *_: hash(name) & 0xFFFF)
    paths = _paths(*CASES[0])
    progs = poly.programs(paths)
    assert progs["bwd_x"].node_out == progs["bwd"].node_out and not progs["bwd_x"].species_out
    assert codegen.unsorted_capable(progs["bwd_x"]) == (codegen.NODES_PER_CALL == 1)
    x = jnp.ones((10, 4, paths.num_in))
    w = jnp.ones((3, paths.num_weights, 4))
    sp = jnp.zeros((10,), jnp.int32)

    def energy(x_, w_):
        return jnp.sum(jit.symmetric_contraction_jit(x_, w_, sp, paths) ** 2)

    def launched(fn):
        text = jax.jit(fn).trace(x, w).lower(lowering_platforms=("cuda",)).as_text()
        names = {n for n in progs if f"key = {hash(n) & 0xFFFF} : i64" in text}
        return names, "jaxk_symcon_sort" in text or jit.SIDE_SORT_TARGET in text

    names, sort = launched(jax.grad(energy))
    assert names == {"fwd", "bwd_x"} and sort == (codegen.NODES_PER_CALL != 1)
    assert launched(jax.grad(energy, argnums=(0, 1))) == ({"fwd", "bwd"}, True)
    names, sort = launched(jax.grad(lambda a, b: jnp.sum(jax.grad(energy)(a, b) ** 2), 1))
    assert {"bwd_x", "bwd2"} <= names and sort


def test_unsorted_kernels_only_for_programs_without_species_outputs(monkeypatch):
    paths = _paths(*CASES[0])
    progs = poly.programs(paths)
    monkeypatch.setattr(codegen, "UNSORTED_FORWARD", False)
    assert not codegen.unsorted_capable(progs["fwd"])
    monkeypatch.undo()
    assert not any(codegen.unsorted_capable(progs[name]) for name in ("bwd", "bwd2"))
    with pytest.raises(ValueError, match="cannot run on unsorted nodes"):
        codegen.generate(progs["bwd"], "float", by_species=False)
    if codegen.NODES_PER_CALL == 1:
        src = codegen.generate(progs["fwd"], "float", by_species=False)
        assert "a.perm[i]" in src and "a.items" not in src and "unsorted" in src


def test_unknown_backend_is_rejected():
    paths = _paths(*CASES[3])
    x = jnp.ones((2, 1, paths.num_in))
    w = jnp.ones((1, paths.num_weights, 1))
    with pytest.raises(ValueError, match="cuda-engine"):
        contract(x, w, jnp.zeros((2,), jnp.int32), paths, backend="triton")


def _lowering_setup(monkeypatch):
    """``(jit module, paths, x, w, species)`` for lowering the "cuda" backend on the CPU: the
    backend reports itself available and kernel keys are the program names' hashes."""
    from jax_mace.symmetric_contraction import jit

    monkeypatch.setattr(jit, "unavailable_reason", lambda *a: None)
    monkeypatch.setattr(jit, "kernel_key", lambda paths, name, ctype, *_: hash(name) & 0xFFFF)
    paths = _paths(*CASES[0])
    x = jnp.ones((10, 4, paths.num_in))
    w = jnp.ones((3, paths.num_weights, 4))
    return jit, paths, x, w, jnp.zeros((10,), jnp.int32)


def test_force_loss_gradient_lowers_to_three_specialised_kernels(monkeypatch):
    """The custom-VJP chain: grad of a force loss = fwd, bwd and bwd2 launches (CPU lowering)."""
    jit, paths, x, w, sp = _lowering_setup(monkeypatch)

    def energy(x_, w_):
        return jnp.sum(jit.symmetric_contraction_jit(x_, w_, sp, paths) ** 2)

    def loss(x_, w_):
        return jnp.sum(jax.grad(energy)(x_, w_) ** 2) + energy(x_, w_)

    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, w)
    text = lowered.lower(lowering_platforms=("cuda",)).as_text()
    assert "jaxk_symcon_sort" in text
    keys = {hash(name) & 0xFFFF for name in ("fwd", "bwd", "bwd2")}
    assert text.count("jaxk_symjit") >= 3
    for key in keys:
        assert f"key = {key} : i64" in text


def _lowered_vjp_and_force_loss(monkeypatch, side_sort: str):
    """Lowered text (cuda) of the output and VJP (x and W), and of the gradient of a loss on both
    first derivatives, with ``$JAX_MACE_SYMJIT_SIDE_SORT=side_sort``. Kernel keys: by program
    name."""
    monkeypatch.setenv("JAX_MACE_SYMJIT_SIDE_SORT", side_sort)
    jit, paths, x, w, sp = _lowering_setup(monkeypatch)
    g = jnp.ones((10, 4, paths.num_out))

    def f(x_, w_):
        return jit.symmetric_contraction_jit(x_, w_, sp, paths)

    def loss(x_, w_):
        gx, gw = jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2), (0, 1))(x_, w_)
        return jnp.sum(gx**2) + jnp.sum(gw**2)

    def value_and_vjp(x_, w_):
        out, back = jax.vjp(f, x_, w_)
        return out, back(g)

    def lower(fn):
        return jax.jit(fn).trace(x, w).lower(lowering_platforms=("cuda",)).as_text()

    jax.clear_caches()  # the variable is read at trace time
    vjp = lower(value_and_vjp)
    second = lower(jax.grad(loss, argnums=(0, 1)))
    jax.clear_caches()
    return vjp, second


def test_weight_gradient_sorts_on_a_side_stream(monkeypatch):
    """With the weights differentiated, the forward rule's forward kernel and species sort are
    one call (`jaxk_symjit_side_sort`), whose zeroed weight gradient the backward accumulates
    into through an input/output alias; no separate sort call."""
    from jax_mace.symmetric_contraction import jit

    if not jit.side_sort(_paths(*CASES[0])):
        pytest.skip("the forward does not run on unsorted nodes here")
    vjp, second = _lowered_vjp_and_force_loss(monkeypatch, "1")
    assert vjp.count(jit.SIDE_SORT_TARGET) == 1 and "jaxk_symcon_sort" not in vjp
    assert vjp.count("@jaxk_symjit(") == 1  # the backward
    # gW (output 2) is the zeroed buffer (operand 8: after 3 sort, 3 node and 2 species arrays).
    assert "sout0_zeroed = 1" in vjp
    assert "output_tuple_indices = [2], operand_index = 8," in vjp
    # Second derivatives differentiate the side-sort call (its output through the custom VJP):
    # the outer backward reuses its sort and zeroes its own weight gradient.
    assert jit.SIDE_SORT_TARGET in second and "jaxk_symcon_sort" not in second
    assert "sout0_zeroed = 0" in second
    for name in ("fwd", "bwd", "bwd2"):
        assert f"key = {hash(name) & 0xFFFF} : i64" in second


def test_side_sort_off_keeps_the_two_calls(monkeypatch):
    """`JAX_MACE_SYMJIT_SIDE_SORT=0`: the forward, then a separate sort call; the backward zeroes
    its own weight gradient (no alias)."""
    from jax_mace.symmetric_contraction import jit

    vjp, second = _lowered_vjp_and_force_loss(monkeypatch, "0")
    for text in (vjp, second):
        assert jit.SIDE_SORT_TARGET not in text and "jaxk_symcon_sort" in text
        assert "sout0_zeroed = 1" not in text and "output_operand_aliases" not in text
    assert vjp.count("@jaxk_symjit(") == 2  # forward and backward


@pytest.mark.parametrize("by_species", [True, False])
def test_coalesced_row_store_stages_every_chunk_once_without_bank_conflicts(by_species):
    """MACE-MP-S's backwards write their 16-float `gx` rows through the warp's shared-memory
    slots (`codegen._coalesced_row_store`). The generated index expressions (C that is also
    Python) are evaluated here: every (row, 16-byte chunk) a lane writes is read back by exactly
    the lane that stores it, and each quarter-warp phase of a 16-byte access touches 8 distinct
    groups of 4 banks."""
    import re

    prog = poly.programs(_paths(LMAX3, "0e", 3))["bwd" if by_species else "bwd_x"]
    assert codegen.small_kernel(prog)
    src = codegen.generate(prog, "float", by_species)
    writes = re.findall(r"const int o = (l \* 16 \+ 4 \* \(\d \^ \(\(l >> 1\) & 3\)\));", src)
    reads = re.findall(r"const int ch = \(l \+ (\d+)\) >> 2, q = l & 3;", src)
    read_o = re.findall(r"const int o = (ch \* 16 \+ 4 \* \(q \^ \(\(ch >> 1\) & 3\)\));", src)
    assert len(writes) == 4 and len(reads) == 4 and len(set(read_o)) == 1, "store not generated"

    def bank_group(o):  # smem float address (o >> 5) * 128 + (o & 31), relative to the warp
        return ((o >> 5) * codegen.BLOCK_THREADS + (o & 31)) % 32 // 4

    written = {}
    for j, expr in enumerate(writes):
        offsets = [eval(expr, {"l": lane}) for lane in range(32)]
        for lane, o in enumerate(offsets):
            assert o % 4 == 0 and 0 <= o < 512 and o not in written
            written[o] = (lane, j)
        for phase in range(4):
            assert len({bank_group(o) for o in offsets[8 * phase : 8 * phase + 8]}) == 8
    read_back = {}
    for k in map(int, reads):
        offsets = []
        for lane in range(32):
            ch, q = (lane + k) >> 2, lane & 3
            o = eval(read_o[0], {"ch": ch, "q": q})
            assert written[o] == (ch, q)
            read_back[(ch, q)] = o
            offsets.append(o)
        for phase in range(4):
            assert len({bank_group(o) for o in offsets[8 * phase : 8 * phase + 8]}) == 8
    assert len(read_back) == 128
