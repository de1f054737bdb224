"""Per-work-item cost of the persistent GNA forward kernel, fitted from timings: FLUX-4K's grid
and stride (256x256, 16x16, tile 16x8) with windows of 30 to 160 KV tiles per work item, and 33
heads, so that 132 SMs get exactly 128 work items each (no partial last wave). A least-squares
line through (KV tiles per item, time per item) gives the cost of one KV tile (slope) and the
fixed cost of one work item (intercept: prologue, epilogue, pipeline refill). Run on the GPU
machine::

    python tools/gna_item_cost.py [--heads 33] [--out cost.json]

Also times dense items (window = grid, 128x128 and 256x256) for their cost per KV tile, and
FLUX-4K GNA itself at 24 and 33 heads, to show the last wave's share at 24.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_gna as bg  # noqa: E402

import simulator  # noqa: E402

GRID, STRIDE, TILE = (256, 256), (16, 16), (16, 8)
WINDOWS = [(48, 80), (80, 80), (144, 80), (256, 80)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=33)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sms = jax.devices()[0].core_count if hasattr(jax.devices()[0], "core_count") else 132
    rows = []
    for window in WINDOWS:
        spec = (GRID, window, STRIDE, args.heads, TILE)
        fn, qkv, *_ = bg.gna_call(spec, jax.random.PRNGKey(0))
        sim = simulator.simulate(GRID, window, STRIDE, q_tile=TILE, kv_tile=TILE)
        items = sim.num_q_tiles * args.heads
        waves = -(-items // sms)
        t = bg.time_fn(fn, qkv)["median_s"]
        rows.append(
            {
                "window": list(window),
                "kv_tiles_per_item": int(sim.max_kv_tiles),
                "items": int(items),
                "items_per_sm": int(waves),
                "ms": 1e3 * t,
                "us_per_item": 1e6 * t / waves,
            }
        )
        print(rows[-1], flush=True)
    n = np.array([r["kv_tiles_per_item"] for r in rows], float)
    y = np.array([r["us_per_item"] for r in rows])
    slope, intercept = np.polyfit(n, y, 1)
    resid = y - (slope * n + intercept)
    fit = {
        "us_per_kv_tile": float(slope),
        "us_fixed_per_item": float(intercept),
        "fixed_in_kv_tiles": float(intercept / slope),
        "max_abs_residual_us": float(np.abs(resid).max()),
    }
    print(fit, flush=True)
    dense = {}
    for grid in ((128, 128), (256, 256)):
        spec = (grid, grid, (1, 1), args.heads, TILE)
        fn, qkv, *_ = bg.gna_call(spec, jax.random.PRNGKey(2))
        sim = simulator.simulate(grid, grid, (1, 1), q_tile=TILE, kv_tile=TILE)
        waves = -(-sim.num_q_tiles * args.heads // sms)
        t = bg.time_fn(fn, qkv)["median_s"]
        dense["x".join(map(str, grid))] = {
            "ms": 1e3 * t,
            "kv_tiles_per_item": int(sim.max_kv_tiles),
            "us_per_kv_tile": 1e6 * t / waves / sim.max_kv_tiles,
        }
        print("dense", grid, dense["x".join(map(str, grid))], flush=True)
    flux = {}
    for heads in (24, 33):
        spec = (GRID, (80, 80), STRIDE, heads, TILE)
        fn, qkv, *_ = bg.gna_call(spec, jax.random.PRNGKey(1))
        flux[heads] = 1e3 * bg.time_fn(fn, qkv)["median_s"]
    print(f"FLUX-4K GNA: 24 heads {flux[24]:.3f} ms, 33 heads {flux[33]:.3f} ms", flush=True)
    if args.out:
        meta = {"gpu": jax.devices()[0].device_kind, "jax": jax.__version__, "sms": sms}
        out = {
            "meta": meta,
            "rows": rows,
            "fit": fit,
            "dense": dense,
            "flux4k_gna_ms_by_heads": flux,
        }
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
