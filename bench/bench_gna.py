"""Benchmark of the GNA forward CUDA kernel against cuDNN dense attention (same run, same GPU).

bf16, head_dim 128, batch 1. For every case: the kernel's time through the user-facing
:func:`jax_gna.cuda_backend.gna_forward_cuda` (no permutation pass exists: tiles are gathered
straight from ``[batch, *spatial, heads, dim]``), cuDNN's dense time
(``jax.nn.dot_product_attention(..., implementation="cudnn")`` on the flattened tokens), the
speedup, the simulator's bound for the tile shape used, and effective TFLOP/s
(``4 * heads * head_dim * visible pairs / time``). GNA and cuDNN are timed in ``--rounds``
interleaved rounds; the speedup is the median of the rounds' ratios, so that each GNA time is set
against a cuDNN time measured next to it. Writes ``gna_<gpu>.json`` under ``--out``.

Every case here takes the TMA producer of the kernel (dilation 1, head_dim 128); ``--ab`` also
times the cp.async producer in the same run (``JAXK_GNA_FORCE_CPASYNC=1``, read by the kernel's
FFI handler at every call) and records ``gna_cpasync_ms``; ``--persistent-ab`` times one CTA per Q
tile (``JAXK_GNA_PERSISTENT=0``) against the default persistent schedule
(``gna_one_cta_per_tile_ms``).

Usage: python bench/bench_gna.py --out bench/results [--cases flux4k_gna,dense_2d_128x128] [--ab]
       [--persistent-ab]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import simulator
from jax_gna import cuda_backend
from simulator.geometry import make_params, visible_keys_per_query

HEAD_DIM = 128

# name: (grid, window, stride, heads, tile for Q and KV (None: the policy's choice))
CASES = {
    "dense_2d_128x128": ((128, 128), (128, 128), (1, 1), 24, (16, 8)),
    "flux4k_gna": ((256, 256), (80, 80), (16, 16), 24, (16, 8)),
    "flux4k_na": ((256, 256), (80, 80), (1, 1), 24, None),
    "hunyuan_gna": ((30, 48, 80), (18, 24, 24), (16, 8, 8), 24, (2, 8, 8)),
    "hunyuan_na": ((30, 48, 80), (18, 24, 24), (1, 1, 1), 24, None),
    "1d_32k_na": ((32768,), (2048,), (1,), 1, (128,)),
    "1d_32k_gna_s256": ((32768,), (2048,), (256,), 1, (128,)),
}


def time_fn(fn, args, min_time: float = 0.5, repeats: int = 5) -> dict:
    """Median/min seconds per call: each repeat launches `n` calls back to back, then syncs."""
    jax.block_until_ready(fn(*args))  # compile + warm up
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = max(time.perf_counter() - t0, 1e-6)
    n = max(1, min(200, int(min_time / repeats / once)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = None
        for _ in range(n):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) / n)
    return {"median_s": float(np.median(samples)), "min_s": float(np.min(samples)), "calls": n}


def time_with_env(fn, args, var: str, value: str) -> dict:
    """``fn`` timed with the environment variable ``var`` (read by the kernel's FFI handler at
    every call) set to ``value``."""
    os.environ[var] = value
    try:
        return time_fn(fn, args)
    finally:
        del os.environ[var]


def gna_call(spec, rng_key):
    """The jitted user-facing GNA call of a case ``spec`` (a :data:`CASES` value) and random
    bf16 inputs for it: ``(fn, (q, k, v), params, q_tile, kv_tile)``."""
    grid, window, stride, heads, tile = spec
    params = make_params(grid, window, stride)
    q_tile, kv_tile = cuda_backend.resolve_tiles(params, HEAD_DIM, tile, tile)
    shape = (1, *grid, heads, HEAD_DIM)
    kq, kk, kv = jax.random.split(rng_key, 3)
    qkv = tuple(jax.random.normal(x, shape, jnp.bfloat16) for x in (kq, kk, kv))
    scale = HEAD_DIM**-0.5
    fn = jax.jit(
        lambda q, k, v: cuda_backend.gna_forward_cuda(q, k, v, params, scale, q_tile, kv_tile)[0]
    )
    return fn, qkv, params, q_tile, kv_tile


def rotated(items: list, r: int) -> list:
    """``items`` starting with item ``r`` (mod their number): round ``r``'s order, so that no item
    is always timed first (in fixed order the first drifted slower round by round, H100)."""
    k = r % len(items)
    return items[k:] + items[:k]


def interleaved(fns: dict, args, rounds: int) -> dict:
    """``{name: [ms per round]}``: each round times every function of ``fns`` once (median of
    :func:`time_fn`'s repeats), in :func:`rotated` order, so that clock and thermal drift during
    the run hit them alike."""
    ms = {n: [] for n in fns}
    for r in range(rounds):
        for n in rotated(list(fns), r):
            ms[n].append(1e3 * time_fn(fns[n], args)["median_s"])
    return ms


def run_case(
    name: str, spec, rng_key, ab: bool = False, persistent_ab: bool = False, rounds: int = 7
) -> dict:
    grid, window, stride, heads, _ = spec
    gna, (q, k, v), params, q_tile, kv_tile = gna_call(spec, rng_key)
    sim = simulator.simulate(grid, window, stride, q_tile=q_tile, kv_tile=kv_tile)
    tokens = int(np.prod(grid))
    flat = (1, tokens, heads, HEAD_DIM)
    dense = jax.jit(
        lambda q, k, v: jax.nn.dot_product_attention(
            q.reshape(flat), k.reshape(flat), v.reshape(flat), implementation="cudnn"
        )
    )
    ms = interleaved({"gna": gna, "cudnn": dense}, (q, k, v), rounds)
    gna_ms, cudnn_ms = float(np.median(ms["gna"])), float(np.median(ms["cudnn"]))
    visible = int(visible_keys_per_query(params).sum())
    flops_sparse = 4.0 * heads * HEAD_DIM * visible
    flops_dense = 4.0 * heads * HEAD_DIM * tokens * tokens
    # Each round's cuDNN time over the GNA time measured next to it.
    speedups = [c / g for c, g in zip(ms["cudnn"], ms["gna"], strict=True)]
    speedup = float(np.median(speedups))
    bound = float(sim.speedup_bound)
    row = {
        "case": name,
        "grid": list(grid),
        "window": list(window),
        "stride": list(stride),
        "heads": heads,
        "q_tile": list(q_tile),
        "kv_tile": list(kv_tile),
        "gna_ms": gna_ms,
        "gna_min_ms": float(np.min(ms["gna"])),
        "cudnn_ms": cudnn_ms,
        "cudnn_min_ms": float(np.min(ms["cudnn"])),
        "gna_rounds_ms": ms["gna"],
        "cudnn_rounds_ms": ms["cudnn"],
        "speedup_rounds": speedups,
        "speedup": speedup,
        "simulator_bound": bound,
        "fraction_of_bound": speedup / bound,
        # every Q tile at the mean KV-tile count: tighter than the bound where border Q tiles
        # visit fewer KV tiles (standard NA)
        "mean_bound": float(sim.mean_bound),
        "fraction_of_mean_bound": speedup / float(sim.mean_bound),
        "flop_bound": float(sim.flop_bound),
        "perfectly_block_sparse": bool(sim.perfectly_block_sparse),
        "gna_effective_tflops": flops_sparse / gna_ms / 1e9,
        "cudnn_tflops": flops_dense / cudnn_ms / 1e9,
    }
    if ab:
        t_cp = time_with_env(gna, (q, k, v), "JAXK_GNA_FORCE_CPASYNC", "1")
        row["gna_cpasync_ms"] = 1e3 * t_cp["median_s"]
        row["tma_speedup_over_cpasync"] = row["gna_cpasync_ms"] / gna_ms
    if persistent_ab:
        t_one = time_with_env(gna, (q, k, v), "JAXK_GNA_PERSISTENT", "0")
        row["gna_one_cta_per_tile_ms"] = 1e3 * t_one["median_s"]
        row["persistent_speedup"] = row["gna_one_cta_per_tile_ms"] / gna_ms
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--ab", action="store_true", help="also time the cp.async producer")
    parser.add_argument(
        "--persistent-ab",
        action="store_true",
        help="also time one CTA per Q tile (JAXK_GNA_PERSISTENT=0) against the persistent kernel",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="rounds of GNA and cuDNN timings, interleaved (speedup: median of per-round ratios)",
    )
    args = parser.parse_args()
    if os.environ.get("JAXK_GNA_FORCE_CPASYNC", "0") not in ("", "0"):
        raise SystemExit("unset JAXK_GNA_FORCE_CPASYNC (use --ab to time the cp.async producer)")
    if os.environ.get("JAXK_GNA_PERSISTENT", "1") == "0":
        raise SystemExit("unset JAXK_GNA_PERSISTENT (use --persistent-ab to time it off)")

    status = __import__("jax_gna").cuda_status()
    if not status.available:
        raise SystemExit(f"GNA CUDA kernel unavailable: {status.reason}")
    dev = jax.devices()[0]
    rows = []
    key = jax.random.PRNGKey(0)
    for name in args.cases.split(","):
        key, sub = jax.random.split(key)
        row = run_case(name, CASES[name], sub, args.ab, args.persistent_ab, args.rounds)
        rows.append(row)
        print(
            f"{name:18s} gna {row['gna_ms']:9.3f} ms  cudnn {row['cudnn_ms']:9.3f} ms  "
            f"speedup {row['speedup']:6.2f}x (bound {row['simulator_bound']:5.2f}x, "
            f"{100 * row['fraction_of_bound']:5.1f}%)  eff {row['gna_effective_tflops']:6.1f} "
            f"TFLOP/s  cudnn {row['cudnn_tflops']:6.1f} TFLOP/s",
            flush=True,
        )
        if args.ab:
            print(
                f"{'':18s} cp.async producer {row['gna_cpasync_ms']:9.3f} ms  "
                f"TMA speedup {row['tma_speedup_over_cpasync']:5.2f}x",
                flush=True,
            )
        if args.persistent_ab:
            print(
                f"{'':18s} one CTA per Q tile {row['gna_one_cta_per_tile_ms']:9.3f} ms  "
                f"persistent speedup {row['persistent_speedup']:5.3f}x",
                flush=True,
            )
    try:
        from jax._src.lib import cuda_versions

        cudnn = cuda_versions.cudnn_get_version() if cuda_versions else None
    except Exception:  # informational only
        cudnn = None
    meta = {
        "gpu": getattr(dev, "device_kind", str(dev)),
        "jax": jax.__version__,
        "jaxlib": __import__("jaxlib").__version__,
        "cudnn": cudnn,
        "platform_version": getattr(dev.client, "platform_version", None),
        "python": platform.python_version(),
        "dtype": "bfloat16",
        "head_dim": HEAD_DIM,
        "batch": 1,
        "producer": "TMA (gna_ms), cp.async (gna_cpasync_ms)" if args.ab else "TMA",
        "schedule": "persistent, one CTA per SM (gna_ms)"
        + (", one CTA per Q tile (gna_one_cta_per_tile_ms)" if args.persistent_ab else ""),
        "timing": (
            f"{args.rounds} rounds, GNA and cuDNN interleaved (the first alternating); a round's "
            "time is the median of 5 repeats of back-to-back jitted calls after warm-up; ms: "
            "median over rounds; speedup: median of the rounds' cuDNN / GNA ratios"
        ),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = meta["gpu"].replace(" ", "_").replace("/", "_")
    path = out / f"gna_{gpu}.json"
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
