"""Symmetric contraction on one GPU: the CUDA engine vs cuEquivariance-JAX (uniform_1d) vs the
pure-JAX reference, in one process, fp32.

Cases: input 128x(0e+1o+2e+3o), 89 species (random, unsorted), output irreps of MACE-MP
small/medium/large (0e, 0e+1o, 0e+1o+2e), correlation 3, N = 10k and 50k nodes. Times the
forward and forward+backward (value and gradients w.r.t. x and the weights of <out, g>); the
reference only at 10k (its memory is O(N C P)). Prints a table and writes
``bench/results/symcon_<gpu>.json`` with the GPU name, versions, the measured copy bandwidth and
the fraction of the physical limit max(bytes / bandwidth, FLOPs / 67 TFLOP/s) reached.

    python bench/bench_symcon.py [--out bench/results] [--quick] [--train] [--sanitize]

"ours" is the ``"cuda"`` backend (kernels specialised per path list, compiled by NVRTC; the first
call's compile time is reported); the generic ``"cuda-engine"`` backend is timed beside it.

Each time is the wall time per call of many back-to-back calls, which at 10k nodes includes
the host's dispatch of each call; beside it, for ours and cuEquivariance, the device time per
call (``*_device``: calls looped inside one jitted program, see :func:`device_loop`). Ours and
cuEquivariance are timed with their reps interleaved (:func:`timeit_interleaved`).

``--sanitize`` runs one tiny forward/backward/second-order call (for compute-sanitizer);
``--train`` adds a MACE-MP-medium training step (energy + forces) with both backends.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jax_mace.symmetric_contraction import cuda_program as cp  # noqa: E402
from jax_mace.symmetric_contraction.cuda import symmetric_contraction_cuda  # noqa: E402
from jax_mace.symmetric_contraction.jit import symmetric_contraction_jit  # noqa: E402
from jax_mace.symmetric_contraction.paths import build_path_list  # noqa: E402
from jax_mace.symmetric_contraction.reference import symmetric_contraction  # noqa: E402

IRREPS_IN = "0e+1o+2e+3o"
MODELS = {"MP-S": "0e", "MP-M": "0e+1o", "MP-L": "0e+1o+2e"}
CHANNELS, SPECIES = 128, 89
FP32_PEAK = 67e12  # FLOP/s (datasheet, H100/H200 SXM)


def _iterations(fn, args, min_rep_s: float) -> int:
    """Calls per rep of a jitted ``fn`` (after two warm-up calls): enough for ``min_rep_s``."""
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    one = max(time.perf_counter() - t0, 1e-6)
    return int(min(max(min_rep_s / one, 3), 2000))


def _rep_ms(fn, args, iters: int) -> float:
    """Wall time per call (ms) of ``iters`` async calls, then one wait for the last."""
    t0 = time.perf_counter()
    for _ in range(iters):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / iters * 1e3


def _summary(samples: list[float]) -> dict:
    return {"median_ms": float(np.median(samples)), "min_ms": float(np.min(samples))}


def timeit(fn, *args, min_rep_s: float = 0.05, reps: int = 7) -> dict:
    """Median and min wall time per call (ms) of a jitted ``fn``, many async calls per rep."""
    iters = _iterations(fn, args, min_rep_s)
    return _summary([_rep_ms(fn, args, iters) for _ in range(reps)])


def timeit_interleaved(cases: dict, min_rep_s: float = 0.05, reps: int = 7) -> dict:
    """:func:`timeit` of several jitted functions (``{name: (fn, args)}``) with their reps
    interleaved (A B C A B C ...), so that a slow stretch of the host or the GPU, which can last
    seconds, falls on all of them alike and their ratios hold: ``{name: {median_ms, min_ms}}``."""
    iters = {name: _iterations(fn, args, min_rep_s) for name, (fn, args) in cases.items()}
    samples = {name: [] for name in cases}
    for _ in range(reps):
        for name, (fn, args) in cases.items():
            samples[name].append(_rep_ms(fn, args, iters[name]))
    return {name: _summary(v) for name, v in samples.items()}


DEVICE_LOOP_CALLS = 20


def device_loop(fn):
    """A jitted function of ``fn``'s arguments that calls ``fn`` ``DEVICE_LOOP_CALLS`` times in
    one ``fori_loop``: its time per call is the device time per call of ``fn``. A jitted call
    from Python pays its dispatch (arguments, executable launch) per call; in the loop it is
    paid once, and each iteration's kernel launches run ahead of the GPU unless they alone take
    longer than its work (H100, MACE-MP-S's 10k-node forward: 0.044-0.051 ms per call back to
    back, 0.036 ms looped). An optimization barrier on the loop-carried arguments keeps XLA from
    hoisting the call out of the loop; one element of every output array is summed so that no
    output is dropped."""

    def run(*a):
        def body(_, carry):
            acc, a_ = carry
            a_ = jax.lax.optimization_barrier(a_)
            leaves = jax.tree_util.tree_leaves(fn(*a_))
            return acc + sum(leaf.reshape(-1)[0] for leaf in leaves), a_

        return jax.lax.fori_loop(0, DEVICE_LOOP_CALLS, body, (jnp.float32(0), a))[0]

    return jax.jit(run)


def per_loop_call(t: dict) -> dict:
    """A :func:`device_loop` timing per call of the looped function."""
    return {k: v / DEVICE_LOOP_CALLS for k, v in t.items()}


def copy_bandwidth() -> float:
    """Device-to-device bandwidth (bytes read + written per second) of ``a + 1`` on 1 GiB."""
    a = jnp.ones((1 << 28,), jnp.float32)
    f = jax.jit(lambda v: v + 1.0)
    t = timeit(f, a, min_rep_s=0.1)["min_ms"] * 1e-3
    return 2 * a.nbytes / t


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _cueq_fns(irreps_out: str, sp):
    import cuequivariance as cue
    import cuequivariance_jax as cuex

    mul = lambda s: "+".join(f"{CHANNELS}x{ir}" for ir in s.split("+"))  # noqa: E731
    e = cue.descriptors.symmetric_contraction(
        cue.Irreps("O3", mul(IRREPS_IN)), cue.Irreps("O3", mul(irreps_out)), (1, 2, 3)
    )
    poly = e.polynomial
    out_dim = e.outputs[0].dim

    def fwd(w_c, x_c):
        shape = jax.ShapeDtypeStruct((x_c.shape[0], out_dim), x_c.dtype)
        return cuex.segmented_polynomial(
            poly, [w_c, x_c], [shape], indices=[sp, None, None], method="uniform_1d"
        )[0]

    return fwd, e.inputs[0].dim, out_dim


def cueq_case(model: str, x, w, sp, g):
    """cuEquivariance's forward for ``model`` and the case's ``w, x, g`` in its layout
    (``ir_mul``; converted here, untimed): ``(fwd, w_c, x_c, g_c)``."""
    fwd_c, wdim, out_dim = _cueq_fns(MODELS[model], sp)
    n, _, k = x.shape
    x_c = jnp.swapaxes(x, 1, 2).reshape(n, k * CHANNELS)
    w_c = w.reshape(SPECIES, wdim)
    g_c = jnp.swapaxes(g, 1, 2).reshape(n, out_dim)
    return fwd_c, w_c, x_c, g_c


def case_inputs(model: str, n: int, seed: int = 0):
    """``(paths, x [N, C, K], w [S, W, C], species [N], cotangent g [N, C, M])`` of a case."""
    paths = build_path_list(IRREPS_IN, MODELS[model], 3)
    k, m, nw = paths.num_in, paths.num_out, paths.num_weights
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, CHANNELS, k)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(SPECIES, nw, CHANNELS)) / np.sqrt(nw), jnp.float32)
    sp = jnp.asarray(rng.integers(0, SPECIES, n), jnp.int32)
    g = jnp.asarray(rng.normal(size=(n, CHANNELS, m)), jnp.float32)
    return paths, x, w, sp, g


def fwd_bwd(f, g):
    """Jitted value and gradient (both arguments) of ``vdot(f(a, b), g)``."""
    return jax.jit(jax.value_and_grad(lambda a, b: jnp.vdot(f(a, b), g), argnums=(0, 1)))


def bench_case(
    model: str, n: int, bw: float, do_ref: bool, do_cueq: bool, seed: int = 0, engine_too=True
):
    irreps_out = MODELS[model]
    paths, x, w, sp, g = case_inputs(model, n, seed)
    k, m, nw = paths.num_in, paths.num_out, paths.num_weights
    res = {"model": model, "irreps_out": irreps_out, "N": n, "K": k, "M": m, "W": nw}
    res["paths"] = paths.num_paths
    res["base_terms"] = cp.base_terms(paths).num_terms

    def ours(x_, w_):  # backend "cuda": kernels specialised per path list (NVRTC)
        return symmetric_contraction_jit(x_, w_, sp, paths)

    def engine(x_, w_):  # backend "cuda-engine": one precompiled kernel for any path list
        return symmetric_contraction_cuda(x_, w_, sp, paths)

    def ref(x_, w_):  # as the model runs it (default matmul precision: TF32 on GPU)
        return symmetric_contraction(x_, w_, sp, paths)

    def ref_hi(x_, w_):  # fp32 matmuls for the error check
        with jax.default_matmul_precision("highest"):
            return symmetric_contraction(x_, w_, sp, paths)

    t0 = time.perf_counter()
    jax.block_until_ready(fwd_bwd(ours, g)(x, w))
    res["ours_first_call_s"] = time.perf_counter() - t0  # NVRTC compile (or disk cache) + jit
    # Ours and cuEquivariance: wall time, then device time, each with the reps interleaved.
    wall = {"ours_fwd": (jax.jit(ours), (x, w)), "ours_fwdbwd": (fwd_bwd(ours, g), (x, w))}
    looped = {"ours_fwd": (device_loop(ours), (x, w))}
    looped["ours_fwdbwd"] = (device_loop(fwd_bwd(ours, g)), (x, w))
    if do_cueq:
        try:
            fwd_c, w_c, x_c, g_c = cueq_case(model, x, w, sp, g)
            fwd_bwd_c = fwd_bwd(fwd_c, g_c)
            wall["cueq_fwd"] = (jax.jit(fwd_c), (w_c, x_c))
            wall["cueq_fwdbwd"] = (fwd_bwd_c, (w_c, x_c))
            looped["cueq_fwd"] = (device_loop(fwd_c), (w_c, x_c))
            looped["cueq_fwdbwd"] = (device_loop(fwd_bwd_c), (w_c, x_c))
            for table in (wall, looped):  # a failing call fails here, not in the timing
                for fn_, args_ in (table["cueq_fwd"], table["cueq_fwdbwd"]):
                    jax.block_until_ready(fn_(*args_))
        except Exception as err:  # keep the run going; the JSON says why
            res["cueq_error"] = f"{type(err).__name__}: {err}"[:500]
            for table in (wall, looped):
                table.pop("cueq_fwd", None)
                table.pop("cueq_fwdbwd", None)
    res.update(timeit_interleaved(wall))
    for name, t in timeit_interleaved(looped).items():
        res[f"{name}_device"] = per_loop_call(t)
    if engine_too:
        res["engine_fwd"] = timeit(jax.jit(engine), x, w)
        res["engine_fwdbwd"] = timeit(fwd_bwd(engine, g), x, w)
    if do_ref:
        out_o, out_r = jax.jit(ours)(x, w), jax.jit(ref_hi)(x, w)
        (_, (gx_o, gw_o)), (_, (gx_r, gw_r)) = fwd_bwd(ours, g)(x, w), fwd_bwd(ref_hi, g)(x, w)
        res["rel_err_vs_ref"] = {
            "out": _rel(out_o, out_r),
            "gx": _rel(gx_o, gx_r),
            "gw": _rel(gw_o, gw_r),
        }
        del out_o, out_r, gx_o, gx_r, gw_o, gw_r
        res["ref_fwd"] = timeit(jax.jit(ref), x, w, min_rep_s=0.2, reps=3)
        res["ref_fwdbwd"] = timeit(fwd_bwd(ref, g), x, w, min_rep_s=0.2, reps=3)

    # Physical limit: minimal bytes (each input read once, each output written once) and the
    # FLOPs of the base-term formulation (one FMA per term; backward: per partial + carrier).
    f32 = 4
    prog_b = cp.program(paths, "bwd")
    bwd_slots = int(
        np.sum(
            prog_b.i32[prog_b.offsets["tj"] : prog_b.offsets["tj"] + 3 * prog_b.num_records] >= 0
        )
    )
    d = res["base_terms"]
    bytes_f = f32 * (n * CHANNELS * (k + m) + SPECIES * nw * CHANNELS + n)
    bytes_fb = f32 * (n * CHANNELS * (2 * k + 2 * m) + 2 * SPECIES * nw * CHANNELS + n)
    flops_f = 2.0 * n * CHANNELS * d
    flops_fb = flops_f + 2.0 * n * CHANNELS * (bwd_slots + d)
    for key, nbytes, flops in (("fwd", bytes_f, flops_f), ("fwdbwd", bytes_fb, flops_fb)):
        limit = max(nbytes / bw, flops / FP32_PEAK)
        res[f"limit_{key}"] = {
            "bytes": nbytes,
            "flops": flops,
            "bound": "memory" if nbytes / bw >= flops / FP32_PEAK else "fp32",
            "time_ms": limit * 1e3,
            "fraction_reached": limit * 1e3 / res[f"ours_{key}"]["median_ms"],
        }
    for key in ("fwd", "fwdbwd"):
        ours_t = res[f"ours_{key}"]["median_ms"]
        if f"cueq_{key}" in res:
            res[f"speedup_vs_cueq_{key}"] = res[f"cueq_{key}"]["median_ms"] / ours_t
        if f"cueq_{key}_device" in res:
            res[f"speedup_vs_cueq_{key}_device"] = (
                res[f"cueq_{key}_device"]["median_ms"] / res[f"ours_{key}_device"]["median_ms"]
            )
        if f"ref_{key}" in res:
            res[f"speedup_vs_ref_{key}"] = res[f"ref_{key}"]["median_ms"] / ours_t
        if f"engine_{key}" in res:
            res[f"speedup_vs_engine_{key}"] = res[f"engine_{key}"]["median_ms"] / ours_t
    return res


def breakdown(model: str, n: int = 10_000, seed: int = 0) -> dict:
    """Time each FFI call of the forward and backward separately (and engine warps per block)."""
    import os

    from jax_mace.symmetric_contraction import cuda as cu

    paths = build_path_list(IRREPS_IN, MODELS[model], 3)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, CHANNELS, paths.num_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(SPECIES, paths.num_weights, CHANNELS)), jnp.float32)
    sp = jnp.asarray(rng.integers(0, SPECIES, n), jnp.int32)
    g = jnp.asarray(rng.normal(size=(n, CHANNELS, paths.num_out)), jnp.float32)
    sort = jax.jit(lambda s_: cu._sort(s_, SPECIES))
    aux = sort(sp)
    tbase = jax.jit(lambda w_: cu._tbase(paths, w_))
    tw = tbase(w)
    fwd = jax.jit(lambda x_, t_, a_: cu._engine(paths, "fwd", [x_], t_, t_, a_)[0])
    bwd = jax.jit(lambda x_, t_, g_, a_: cu._engine(paths, "bwd", [x_, g_], t_, t_, a_))
    z = bwd(x, tw, g, aux)[1]
    wgrad = jax.jit(lambda z_: cu._wgrad(paths, z_))
    res = {
        "model": model,
        "N": n,
        "sort": timeit(sort, sp),
        "tbase": timeit(tbase, w),
        "wgrad": timeit(wgrad, z),
        "engine_bwd": timeit(bwd, x, tw, g, aux),
    }
    for warps in ("4", "2", "1"):
        os.environ["JAXK_SYMCON_WARPS"] = warps
        res[f"engine_fwd_w{warps}"] = timeit(fwd, x, tw, aux)
    os.environ.pop("JAXK_SYMCON_WARPS")
    return res


def profile_run(model: str = "MP-L", n: int = 10_000):
    """One forward and one forward+backward call (for ncu)."""
    paths = build_path_list(IRREPS_IN, MODELS[model], 3)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, CHANNELS, paths.num_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(SPECIES, paths.num_weights, CHANNELS)), jnp.float32)
    sp = jnp.asarray(rng.integers(0, SPECIES, n), jnp.int32)
    f = jax.jit(lambda x_, w_: symmetric_contraction_jit(x_, w_, sp, paths))
    jax.block_until_ready(f(x, w))
    g = jnp.ones((n, CHANNELS, paths.num_out), jnp.float32)
    fb = jax.jit(jax.grad(lambda a, b: jnp.vdot(f(a, b), g), argnums=(0, 1)))
    jax.block_until_ready(fb(x, w))


def sanitize_run():
    """Tiny calls of every kernel (run under compute-sanitizer): MACE-MP-S's output irreps (the
    small kernels, node values in registers) and MP-M's (staged in shared memory)."""
    rng = np.random.default_rng(0)
    n, c, s = 70, 4, 3
    x = jnp.asarray(rng.normal(size=(n, c, 16)), jnp.float32)
    sp = jnp.asarray(rng.integers(-1, s + 1, n), jnp.int32)
    for irreps_out in (MODELS["MP-S"], MODELS["MP-M"]):
        paths = build_path_list(IRREPS_IN, irreps_out, 3)
        w = jnp.asarray(rng.normal(size=(s, paths.num_weights, c)), jnp.float32)
        for impl in (symmetric_contraction_jit, symmetric_contraction_cuda):

            def total(x_, w_, impl=impl, paths=paths):
                f = lambda a: impl(a, w_, sp, paths)  # noqa: E731
                return jnp.sum(jax.grad(lambda a: jnp.sum(f(a) ** 2))(x_) ** 2) + jnp.sum(f(x_))

            out = jax.jit(jax.grad(total, argnums=(0, 1)))(x, w)
            jax.block_until_ready(out)
            sums = [float(jnp.sum(o)) for o in out]
            print("sanitize run done:", irreps_out, impl.__name__, sums)


def run_info() -> dict:
    """GPU, versions and the contraction backend's status, for the results JSON."""
    import jax_mace

    dev = jax.devices()[0]
    info = {
        "gpu": dev.device_kind,
        "platform": dev.platform,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "python": platform.python_version(),
        "cuda_status": jax_mace.cuda_status().reason,
        "dtype": "float32",
    }
    try:
        import cuequivariance
        import cuequivariance_jax

        info["cuequivariance"] = cuequivariance.__version__
        info["cuequivariance_jax"] = cuequivariance_jax.__version__
    except ImportError as err:
        info["cuequivariance"] = f"unavailable: {err}"
    return info


def results_file(out: str | Path, kind: str, gpu: str) -> Path:
    """``<out>/<kind>_<gpu>.json`` (the GPU name with every non-alphanumeric run as ``_``); makes
    the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(ch if ch.isalnum() else "_" for ch in gpu).strip("_")
    return folder / f"{kind}_{name}.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quick", action="store_true", help="10k nodes only")
    ap.add_argument("--no-cueq", action="store_true")
    ap.add_argument("--no-engine", action="store_true", help="skip backend 'cuda-engine'")
    ap.add_argument(
        "--ours-only",
        action="store_true",
        help="backend 'cuda' (and cuEquivariance when installed) only; print, no JSON",
    )
    ap.add_argument("--models", default=",".join(MODELS), help="with --ours-only")
    ap.add_argument("--train", action="store_true", help="also time a MACE-MP-medium step")
    ap.add_argument("--sanitize", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="per-kernel times, then exit")
    ap.add_argument("--profile", default=None, help="one forward call of this model (for ncu)")
    args = ap.parse_args()
    if args.sanitize:
        sanitize_run()
        return
    if args.profile:
        profile_run(args.profile)
        return
    if args.ours_only:
        bw = copy_bandwidth()
        for model in args.models.split(","):
            for n in (10_000, 50_000):
                r = bench_case(model, n, bw, do_ref=False, do_cueq=True, engine_too=False)
                line = f"{model} N={n} fwd {r['ours_fwd']['median_ms']:.4f} ms"
                line += f"  fwd+bwd {r['ours_fwdbwd']['median_ms']:.4f} ms"
                if "speedup_vs_cueq_fwd" in r:
                    line += f"  vs cueq {r['speedup_vs_cueq_fwd']:.2f}x"
                    line += f" / {r['speedup_vs_cueq_fwdbwd']:.2f}x"
                print(line, flush=True)
        return
    if args.breakdown:
        for model in MODELS:
            print(json.dumps(breakdown(model)), flush=True)
        return
    info = run_info()
    bw = copy_bandwidth()
    info["copy_bandwidth_TBps"] = bw / 1e12
    print(json.dumps(info, indent=1), flush=True)
    cases = []
    sizes = [10_000] if args.quick else [10_000, 50_000]
    for n in sizes:
        for model in MODELS:
            r = bench_case(
                model,
                n,
                bw,
                do_ref=(n == 10_000),
                do_cueq=not args.no_cueq,
                engine_too=not args.no_engine,
            )
            cases.append(r)
            print(json.dumps(r), flush=True)
    result = {"info": info, "cases": cases}
    if args.train:
        from bench_symcon_train import train_step_bench  # noqa: E402

        result["train"] = train_step_bench()
        print(json.dumps(result["train"], indent=1), flush=True)
    results_file(args.out, "symcon", info["gpu"]).write_text(json.dumps(result, indent=1))
    print(f"\n{info['gpu']}  (copy bandwidth {bw / 1e12:.2f} TB/s)")
    print(
        f"{'case':<12}{'ours fwd':>10}{'cuEq fwd':>10}{'x':>7}{'ours f+b':>10}{'cuEq f+b':>10}"
        f"{'x':>7}{'dev x f':>8}{'dev x fb':>9}{'ref fwd':>10}{'ref f+b':>10}{'lim% f':>8}"
        f"{'lim% fb':>8}"
    )
    for r in cases:

        def t(key, r=r):
            return r[key]["median_ms"] if key in r else float("nan")

        print(
            f"{r['model'] + ' ' + str(r['N'] // 1000) + 'k':<12}{t('ours_fwd'):10.3f}"
            f"{t('cueq_fwd'):10.3f}{r.get('speedup_vs_cueq_fwd', float('nan')):7.2f}"
            f"{t('ours_fwdbwd'):10.3f}{t('cueq_fwdbwd'):10.3f}"
            f"{r.get('speedup_vs_cueq_fwdbwd', float('nan')):7.2f}"
            f"{r.get('speedup_vs_cueq_fwd_device', float('nan')):8.2f}"
            f"{r.get('speedup_vs_cueq_fwdbwd_device', float('nan')):9.2f}{t('ref_fwd'):10.3f}"
            f"{t('ref_fwdbwd'):10.3f}{100 * r['limit_fwd']['fraction_reached']:8.1f}"
            f"{100 * r['limit_fwdbwd']['fraction_reached']:8.1f}"
        )


if __name__ == "__main__":
    main()
