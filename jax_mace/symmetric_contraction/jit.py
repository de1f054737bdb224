"""Run-time specialised CUDA kernels of the symmetric contraction (backend ``"cuda"``).

For a path list, :mod:`.polynomial` derives four programs (``fwd``, ``bwd``, ``bwd_x``,
``bwd2``: the contraction, its VJP, its VJP for ``x`` alone and the VJP of the VJP) and
:mod:`.codegen` writes one straight-line kernel per program and dtype, with every coefficient
an immediate and every operand in a register. NVRTC (``cuda-bindings``) compiles it for the GPU
at trace time; the cubin is cached on disk
(``$JAX_MACE_KERNEL_CACHE``, default ``~/.cache/jax_mace/kernels``), so a path list compiles once
per machine and new irreps never need a rebuild of the package. The C++ side
(``cpp/mace/symjit.cc``) keeps the loaded kernels by key and launches them from one FFI target,
``jaxk_symjit``.

Differentiation: ``_contract`` (program ``fwd``) has a custom VJP that runs ``_contract_vjp``
(program ``bwd``: ``gx`` and the weight gradient ``gW``), whose own custom VJP runs ``bwd2``; so
``jax.grad`` of a loss on forces (a second derivative) runs on these kernels. Where the weights
are not differentiated (forces at inference, or the inner gradient of a force loss), the VJP is
``_contract_vjp_x`` (program ``bwd_x``: ``gx`` alone), whose custom VJP also runs ``bwd2``. A
third derivative is not supported. The forward and ``bwd_x`` run on the nodes in the caller's
order (each node gathers its species' weights); the programs that sum weight gradients per
species run on nodes sorted by species inside (the engine's counting sort, done in the forward
rule of the VJP, or before ``bwd2``). Where the forward rule needs the sort, one FFI call,
``jaxk_symjit_side_sort``, runs it on a side CUDA stream while the forward kernel runs, and also
zeroes the buffer that the backward then accumulates its weight gradient into
(``$JAX_MACE_SYMJIT_SIDE_SORT=0``: a separate sort call after the forward, and the backward
zeroes its own weight gradient).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jax_mace.symmetric_contraction import codegen
from jax_mace.symmetric_contraction.cuda import _sort, checked_inputs, sort_shapes
from jax_mace.symmetric_contraction.paths import PathList
from jax_mace.symmetric_contraction.polynomial import programs

TARGET = "jaxk_symjit"
SIDE_SORT_TARGET = "jaxk_symjit_side_sort"
SUPPORTED_DTYPES = (jnp.float32, jnp.float64)
MAX_COMPONENTS = 64  # K and M per channel (register budget of the generated code)
_SDS = jax.ShapeDtypeStruct


def nvrtc_unavailable_reason() -> str | None:
    """Why NVRTC cannot be used here (``None`` when it can)."""
    try:
        from cuda.bindings import nvrtc  # noqa: F401
    except Exception as err:  # ImportError, or a library that fails to load
        return f"NVRTC is not available ({err}); pip install cuda-bindings"
    return None


def unavailable_reason(x: jax.Array | None = None, paths: PathList | None = None) -> str | None:
    """Why the specialised CUDA backend cannot run (``None`` when it can)."""
    import jax_mace

    status = jax_mace.cuda_status()
    if not (status.has(TARGET) and status.has(SIDE_SORT_TARGET)):
        return f"the MACE CUDA extension is not usable: {status.reason}"
    reason = nvrtc_unavailable_reason()
    if reason is not None:
        return reason
    if x is not None and x.dtype not in SUPPORTED_DTYPES:
        return f"the CUDA symmetric contraction supports float32/float64, not {x.dtype}"
    if paths is not None and max(paths.num_in, paths.num_out) > MAX_COMPONENTS:
        return f"the CUDA kernels support K, M <= {MAX_COMPONENTS}"
    return None


def gpu_arch() -> str:
    """NVRTC target of the first GPU, e.g. ``sm_90a`` on Hopper."""
    major, minor = jax.devices("gpu")[0].compute_capability.split(".")
    return f"sm_{major}{minor}a" if major in ("9", "10") else f"sm_{major}{minor}"


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "jax_mace" / "kernels"
    return Path(os.environ.get("JAX_MACE_KERNEL_CACHE", default))


def _nvrtc_check(result, what: str, program=None) -> None:
    from cuda.bindings import nvrtc

    if result == nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return
    log = ""
    if program is not None:
        _, size = nvrtc.nvrtcGetProgramLogSize(program)
        buf = b" " * size
        nvrtc.nvrtcGetProgramLog(program, buf)
        log = buf.decode(errors="replace")
    raise RuntimeError(f"NVRTC {what} failed ({result}):\n{log[-4000:]}")


def compile_cubin(source: str, arch: str) -> bytes:
    """Compile generated CUDA ``source`` for ``arch`` with NVRTC; returns the cubin."""
    from cuda.bindings import nvrtc

    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"symjit.cu", 0, [], [])
    _nvrtc_check(err, "create")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _nvrtc_check(err, "compile", prog)
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        _nvrtc_check(err, "cubin size")
        cubin = b" " * size
        (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin)
        _nvrtc_check(err, "cubin")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return cubin


@functools.lru_cache(maxsize=256)
def kernel_key(paths: PathList, name: str, ctype: str, by_species: bool = True) -> int:
    """Key of the loaded kernel for program ``name`` of ``paths`` (compiled/loaded on demand);
    ``by_species=False``: the variant that runs on unsorted nodes (``codegen.generate``)."""
    import importlib

    module = importlib.import_module("jax_mace._mace_cuda")
    arch = gpu_arch()
    source = codegen.generate(programs(paths)[name], ctype, by_species)
    key = codegen.source_key(f"{arch}\n{source}")
    if module.symjit_registered(key):
        return key
    path = _cache_dir() / f"symjit_{key:016x}_{arch}.cubin"
    cubin = path.read_bytes() if path.is_file() else None
    if not cubin:
        cubin = compile_cubin(source, arch)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(cubin)
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs a recompilation next time
    module.symjit_register(key, cubin)
    return key


def _tuning(name: str, low: int, high: int) -> int:
    """Launch-shape override ``$JAX_MACE_SYMJIT_<name>`` clamped to ``[low, high]``; 0 (unset)
    leaves the choice to the launcher (``cpp/mace/symjit.cc``: most resident warps; at least two
    loop steps per block, else about eight waves of blocks)."""
    env = os.environ.get(f"JAX_MACE_SYMJIT_{name}")
    return max(low, min(high, int(env))) if env else 0


def _padded(arrays, count: int, dtype):
    """``arrays`` cast to ``dtype`` and padded to ``count`` with repeats of the first: the FFI
    targets take 3 node and 2 species operands, and the width attributes say how many are real."""
    cast = [a.astype(dtype) for a in arrays]
    return cast + [cast[0]] * (count - len(cast))


def _out_shapes(widths, shape, dtype):
    """Two output slots: ``shape(m)`` for each width ``m``, ``[1]`` placeholders for the rest."""
    return [_SDS(shape(m), dtype) for m in widths] + [_SDS((1,), dtype)] * (2 - len(widths))


def _kernel_attrs(paths: PathList, name: str, dtype, by_species: bool) -> dict:
    """FFI attributes of a launch of program ``name`` shared by both targets: the kernel's key
    (compiled and loaded on demand), the launch-shape overrides and the array widths."""
    prog = programs(paths)[name]
    ctype = "float" if dtype == jnp.float32 else "double"
    return dict(
        key=np.int64(kernel_key(paths, name, ctype, by_species)),
        chunk=np.int64(
            _tuning("CHUNK", 1, 128) or (0 if by_species else codegen.unsorted_chunk(prog))
        ),
        groups=np.int64(_tuning("GROUPS", 1, 8) or (0 if codegen.grouped(prog) else 1)),
        nodes_per_call=np.int64(codegen.NODES_PER_CALL),
        smem=np.int64(codegen.smem_bytes(prog, ctype)),
        nin_widths=np.asarray(prog.node_in, np.int64),
        sin_widths=np.asarray(prog.species_in, np.int64),
        nout_widths=np.asarray([len(a) for a in prog.node_out], np.int64),
    )


def _launch(paths: PathList, name: str, node_in, species_in, sort, sout0_zeroed=None):
    """Run program ``name``: returns ``(node outputs, species outputs)`` as lists. ``sort`` is
    ``(perm, items, nitems)`` of the species sort, or ``(species,)``: nodes in their own order
    (programs that are ``codegen.unsorted_capable`` only). ``sout0_zeroed``: ``None``, or a
    zeroed array of the first species output's shape ``[S, m, C]`` that the kernel accumulates
    into in place (aliased to that output), so the call launches no zeroing of its own."""
    prog = programs(paths)[name]
    dtype = node_in[0].dtype
    by_species = len(sort) == 3
    if not by_species:  # perm carries the species; items and nitems are unused (placeholders
        # built here would cost a broadcast kernel per call)
        sort = (sort[0].astype(jnp.int32),) * 3
    n, c = node_in[0].shape[:2]
    s = species_in[0].shape[0]
    nout = [len(a) for a in prog.node_out]
    sout = [len(a) for a in prog.species_out]
    shapes = _out_shapes(nout, lambda m: (n, c, m), dtype)
    shapes += _out_shapes(sout, lambda m: (s, m, c), dtype)
    operands = [*sort, *_padded(node_in, 3, dtype), *_padded(species_in, 2, dtype)]
    operands.append(sort[0] if sout0_zeroed is None else sout0_zeroed)  # unused placeholder
    aliases = None if sout0_zeroed is None else {len(operands) - 1: 2}
    call = jax.ffi.ffi_call(TARGET, shapes, vmap_method="sequential", input_output_aliases=aliases)
    outs = call(
        *operands,
        by_species=np.int64(by_species),
        sout0_zeroed=np.int64(sout0_zeroed is not None),
        sout_widths=np.asarray(sout, np.int64),
        **_kernel_attrs(paths, name, dtype, by_species),
    )
    return list(outs[: len(nout)]), list(outs[2 : 2 + len(sout)])


def _forward_side_sort(paths: PathList, x, w, species):
    """The ``fwd`` program on unsorted nodes (XLA's stream) and, on a side CUDA stream while it
    runs, the species sort and a zeroed weight-gradient buffer for the backward: one FFI call,
    ``jaxk_symjit_side_sort``, that returns once both are done.

    Args:
        x: ``[N, C, K]``; w: ``[S, W, C]`` in ``x.dtype``; species: ``[N]`` int32.

    Returns:
        ``(out [N, C, M], (perm [N], items [I, 4], nitems [1]), gw0 [S, W, C] zeros)``.
    """
    dtype = x.dtype
    n, c, _ = x.shape
    s = w.shape[0]
    nout = [len(a) for a in programs(paths)["fwd"].node_out]
    (gw_width,) = [len(a) for a in programs(paths)["bwd"].species_out]
    shapes = _out_shapes(nout, lambda m: (n, c, m), dtype)
    shapes += [*sort_shapes(n, s), _SDS((s, gw_width, c), dtype)]
    call = jax.ffi.ffi_call(SIDE_SORT_TARGET, shapes, vmap_method="sequential")
    outs = call(
        species.astype(jnp.int32),
        *_padded([x], 3, dtype),
        *_padded([w], 2, dtype),
        **_kernel_attrs(paths, "fwd", dtype, False),
    )
    out, _, perm, items, nitems, _, gw0 = outs
    return out, (perm, items, nitems), gw0


def _launch_own_order(paths: PathList, name: str, node_in, species_in, species):
    """:func:`_launch` of a program without species outputs: on the nodes in their own order
    when it can (no species sort; ``codegen.unsorted_capable``), else through the sort."""
    if codegen.unsorted_capable(programs(paths)[name]):
        return _launch(paths, name, node_in, species_in, (species,))
    return _launch(paths, name, node_in, species_in, _sort(species, species_in[0].shape[0]))


def _forward(paths: PathList, x, w, species):
    """The ``fwd`` program."""
    (out,), _ = _launch_own_order(paths, "fwd", [x], [w], species)
    return out


def side_sort(paths: PathList) -> bool:
    """Whether the forward rule of a weight gradient makes the species sort (and the zeroed
    weight gradient) on a side stream during the forward kernel (:func:`_forward_side_sort`):
    where the forward runs on unsorted nodes, unless ``$JAX_MACE_SYMJIT_SIDE_SORT=0`` (read at
    trace time; then a separate sort call follows the forward)."""
    enabled = os.environ.get("JAX_MACE_SYMJIT_SIDE_SORT", "1") != "0"
    return enabled and codegen.unsorted_capable(programs(paths)["fwd"])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _contract(paths, x, w, species):
    return _forward(paths, x, w, species)


def _primal_values(x, w, species):
    """The values of custom-VJP primals (``symbolic_zeros``) and whether ``w`` is perturbed."""
    return x.value, w.value, species.value, w.perturbed


def _contract_fwd(paths, x, w, species):
    # symbolic_zeros: the primals come as CustomVJPPrimal, telling whether the weights are
    # differentiated. Without a weight gradient (force inference) the backward computes gx
    # alone, on unsorted nodes; else the species sort is made here for the backward's weight
    # sums. The output goes through a custom VJP (`_contract` itself, or `_contract_side_sort`)
    # so that differentiating this rule (second derivatives) uses the kernels again.
    # Residuals: (x, w, species, sort or None, zeroed weight gradient or None).
    x, w, species, weights_differentiated = _primal_values(x, w, species)
    if not weights_differentiated:
        return _contract(paths, x, w, species), (x, w, species, None, None)
    if side_sort(paths):
        out, sort, gw0 = _contract_side_sort(paths, x, w, species)
        return out, (x, w, species, sort, gw0)
    return _contract(paths, x, w, species), (x, w, species, _sort(species, w.shape[0]), None)


def _contract_bwd(paths, res, g):
    if isinstance(g, SymbolicZero):
        return None, None, None
    x, w, species, sort, gw0 = res
    if sort is None:  # weights not differentiated
        return _contract_vjp_x(paths, x, w, g, species), None, None
    gx, gw = _contract_vjp(paths, x, w, g, *sort, gw0)
    return gx, gw, None


_contract.defvjp(_contract_fwd, _contract_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _contract_side_sort(paths, x, w, species):
    """:func:`_forward_side_sort` (``out``, the sort and a zeroed ``[S, W, C]``), differentiable
    in ``out`` exactly as :func:`_contract`."""
    return _forward_side_sort(paths, x, w, species)


def _contract_side_sort_fwd(paths, x, w, species):
    # `_contract_fwd`'s residuals, reusing this call's sort. The zeroed buffer is not one of
    # them: the inner backward consumes it (it is updated in place).
    x, w, species, weights_differentiated = _primal_values(x, w, species)
    out, sort, gw0 = _forward_side_sort(paths, x, w, species)
    res = (x, w, species, sort if weights_differentiated else None, None)
    return (out, sort, gw0), res


def _contract_side_sort_bwd(paths, res, cts):
    # Only `out` has a derivative: the sort is integers and the zeroed buffer a constant.
    return _contract_bwd(paths, res, cts[0])


_contract_side_sort.defvjp(_contract_side_sort_fwd, _contract_side_sort_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _contract_vjp_x(paths, x, w, g, species):
    """``gx [N, C, K]`` alone (program ``bwd_x``, unsorted nodes): the VJP of
    :func:`_contract` when the weights need no gradient."""
    (gx,), _ = _launch_own_order(paths, "bwd_x", [x, g], [w], species)
    return gx


def _contract_vjp_x_fwd(paths, x, w, g, species):
    return _contract_vjp_x(paths, x, w, g, species), (x, w, g, species)


def _contract_vjp_x_bwd(paths, res, hx):
    # The second derivative needs the weight sums of bwd2: sort here (cotangent of gW: zero).
    x, w, g, species = res
    sort = _sort(species, w.shape[0])
    (dx, dg), (dw,) = _launch(paths, "bwd2", [x, g, hx], [w, jnp.zeros_like(w)], sort)
    return dx, dw, dg, None


_contract_vjp_x.defvjp(_contract_vjp_x_fwd, _contract_vjp_x_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _contract_vjp(paths, x, w, g, perm, items, nitems, gw0):
    """``(gx [N, C, K], gW [S, W, C])``: the VJP of :func:`_contract` for cotangent ``g``.
    ``gw0``: ``None``, or a zeroed ``[S, W, C]`` that becomes ``gW`` in place (the kernel adds
    its weight sums into it; a destination, so it gets no cotangent)."""
    (gx,), (gw,) = _launch(paths, "bwd", [x, g], [w], (perm, items, nitems), gw0)
    return gx, gw


def _contract_vjp_fwd(paths, x, w, g, perm, items, nitems, gw0):
    out = _contract_vjp(paths, x, w, g, perm, items, nitems, gw0)
    return out, (x, w, g, perm, items, nitems)


def _contract_vjp_bwd(paths, res, cts):
    x, w, g, perm, items, nitems = res
    hx, hw = cts
    (dx, dg), (dw,) = _launch(paths, "bwd2", [x, g, hx], [w, hw], (perm, items, nitems))
    return dx, dw, dg, None, None, None, None


_contract_vjp.defvjp(_contract_vjp_fwd, _contract_vjp_bwd)


def symmetric_contraction_jit(
    x: jax.Array, weights: jax.Array, species: jax.Array, paths: PathList
) -> jax.Array:
    """Specialised-kernel twin of :func:`~.reference.symmetric_contraction`.

    Args:
        x: ``[N, C, K]`` float32/float64.
        weights: ``[S, W, C]`` (cast to ``x.dtype``).
        species: ``[N]`` integers; nodes with a species outside ``[0, S)`` get zero outputs.
        paths: the path list (static).

    Returns:
        ``[N, C, M]`` in ``x.dtype``.
    """
    if not checked_inputs(x, weights, species, paths, unavailable_reason(x, paths)):
        return jnp.zeros((*x.shape[:2], paths.num_out), x.dtype)
    return _contract(paths, x, weights.astype(x.dtype), species.astype(jnp.int32))
