"""Time the GNA simulator on the paper-sized grids (CPU) and save the numbers as JSON.

Targets (issue 3): a HunyuanVideo-sized static simulation (grid 30x48x80) well under 0.1 s, and
the "1d" raster tiling on 115k tokens under 5 s. Every case times a full ``simulate`` call plus
reading the bounds, the perfect-block-sparsity flag and the per-Q-tile count array.

Usage: ``python bench/bench_simulator.py [--repeats 7] [--out bench/results/simulator_cpu.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import simulator  # noqa: E402

HUNYUAN = dict(input_shape=(30, 48, 80), window=(18, 24, 24))
FLUX = dict(input_shape=(256, 256), window=(80, 80))
T3 = dict(q_tile=(2, 8, 8), kv_tile=(2, 8, 8))


def tokens(n: int) -> dict:
    return dict(q_tile=n, kv_tile=n, tiling="1d")


# (name, simulate kwargs, target seconds or None for informative cases)
CASES = [
    ("hunyuan static GNA 16x8x8, 2x8x8", dict(**HUNYUAN, stride=(16, 8, 8), **T3), 0.1),
    ("hunyuan static NA, 2x8x8", dict(**HUNYUAN, stride=1, **T3), 0.1),
    ("hunyuan dynamic NA, 2x8x8", dict(**HUNYUAN, stride=1, **T3, tiling="dynamic"), None),
    (
        "hunyuan 1d GNA 16x8x8, 128/128 (115k tok)",
        dict(**HUNYUAN, stride=(16, 8, 8), **tokens(128)),
        5.0,
    ),
    ("hunyuan 1d NA, 128/128 (115k tok)", dict(**HUNYUAN, stride=1, **tokens(128)), 5.0),
    ("hunyuan 1d NA, 64/64 (115k tok)", dict(**HUNYUAN, stride=1, **tokens(64)), 5.0),
    (
        "1d worst: window 30x48x79, 128/128",
        dict(input_shape=(30, 48, 80), window=(30, 48, 79), **tokens(128)),
        None,
    ),
    ("flux static GNA 16x16, 16x8", dict(**FLUX, stride=16, q_tile=(16, 8), kv_tile=(16, 8)), None),
    ("flux 1d NA, 128/128 (65k tok)", dict(**FLUX, stride=1, **tokens(128)), None),
]


def run_once(kwargs) -> float:
    t0 = time.perf_counter()
    res = simulator.simulate(**kwargs)
    _ = (res.speedup_bound, res.mean_bound, res.perfectly_block_sparse, res.kv_tiles_per_q_tile)
    return time.perf_counter() - t0


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "simulator_cpu.json")
    )
    args = parser.parse_args()
    rows = []
    for name, kwargs, target in CASES:
        run_once(kwargs)  # warm-up
        times = [run_once(kwargs) for _ in range(args.repeats)]
        res = simulator.simulate(**kwargs)
        row = {
            "case": name,
            "config": dict(kwargs),
            "min_s": min(times),
            "median_s": statistics.median(times),
            "target_s": target,
            "meets_target": None if target is None else max(times) < target,
            "speedup_bound": res.speedup_bound,
            "perfectly_block_sparse": res.perfectly_block_sparse,
        }
        rows.append(row)
        flag = "" if target is None else (" OK" if row["meets_target"] else " MISSED")
        print(
            f"{name:50s} min {row['min_s'] * 1e3:9.2f} ms  median {row['median_s'] * 1e3:9.2f} ms"
            f"  bound {res.speedup_bound:6.2f}x{flag}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), "repeats": args.repeats, "results": rows}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["meets_target"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
