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


def time_items(grid, window, stride, heads: int, sms: int, seed: int) -> dict:
    """Median ms of one GNA call (tile 16x8), its KV tiles per work item and work items on the
    busiest SM."""
    fn, qkv, *_ = bg.gna_call((grid, window, stride, heads, TILE), jax.random.PRNGKey(seed))
    sim = simulator.simulate(grid, window, stride, q_tile=TILE, kv_tile=TILE)
    items = sim.num_q_tiles * heads
    return {
        "ms": 1e3 * bg.time_fn(fn, qkv)["median_s"],
        "kv_tiles_per_item": int(sim.max_kv_tiles),
        "items": int(items),
        "items_per_sm": int(-(-items // sms)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=33)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sms = jax.devices()[0].core_count
    rows = []
    for window in WINDOWS:
        row = {"window": list(window), **time_items(GRID, window, STRIDE, args.heads, sms, 0)}
        row["us_per_item"] = 1e3 * row["ms"] / row["items_per_sm"]
        rows.append(row)
        print(row, flush=True)
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
        d = time_items(grid, grid, (1, 1), args.heads, sms, 2)
        d["us_per_kv_tile"] = 1e3 * d["ms"] / d["items_per_sm"] / d["kv_tiles_per_item"]
        dense["x".join(map(str, grid))] = d
        print("dense", grid, d, flush=True)
    flux = {h: time_items(GRID, (80, 80), STRIDE, h, sms, 1)["ms"] for h in (24, 33)}
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
