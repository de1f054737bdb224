"""Per-work-item cycle breakdown of the persistent TMA GNA kernel, from a diagnostic build.

Build the extension with the consumers' clock counters compiled in, then run this on the GPU
machine::

    CMAKE_ARGS='-DCMAKE_CUDA_FLAGS=-DJAXK_GNA_TIMING=1' JAXK_CUDA=ON \\
        pip install --no-build-isolation --no-deps -e . -Cbuild-dir=build/timing
    python tools/gna_timing.py [--cases dense_2d_128x128,flux4k_gna] [--calls 3]

Each consumer warpgroup of the first 24 CTAs prints its sums at exit (SM clock cycles): waiting
for the Q tile (`q`), the KV-tile loop up to the last `P V` (`loop`), the epilogue (`epi`), and
inside the loop the waits for K/V (`kv`), for the turn to issue GEMMs (`turn`), for the
warpgroup's own GEMMs (`gemm`) and the softmax (`soft`; the last two in the steady-state loop
only). This prints their means per work item and the loop's cycles per KV tile. The counters
slow the kernel (the dense case by about 30%) and hide where it waits (Nsight Compute on the
normal build shows that); compare builds with each other, not with the benchmark.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("total", "q", "loop", "epi", "kv", "turn", "gemm", "soft")


def child(cases: list[str], calls: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_gna as bg
    import jax

    for case in cases:
        fn, qkv, *_ = bg.gna_call(bg.CASES[case], jax.random.PRNGKey(0))
        for i in range(calls):
            print(f"=== {case} call {i}", flush=True)
            jax.block_until_ready(fn(*qkv))


def summarise(text: str) -> None:
    for block in text.split("=== ")[1:]:
        head = block.splitlines()[0]
        rows = [line.split() for line in block.splitlines() if line.startswith("TIMING")]
        if not rows:
            print(f"{head}: no TIMING lines (is this a -DJAXK_GNA_TIMING=1 build?)")
            continue
        tot = collections.Counter()
        for fields in rows:
            values = dict(zip(fields[1::2], map(int, fields[2::2]), strict=True))
            for key in ("items", "tiles", *FIELDS):
                tot[key] += values[key]
        items = tot["items"]
        means = " ".join(f"{key} {tot[key] / items:.0f}" for key in FIELDS)
        per_tile = " ".join(
            f"{key} {tot[key] / tot['tiles']:.0f}" for key in ("loop", "gemm", "soft")
        )
        print(f"{head}: per work item {means} | per KV tile {per_tile}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="dense_2d_128x128,flux4k_gna,hunyuan_gna")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.cases.split(","), args.calls)
        return
    cmd = [sys.executable, __file__, "--child", "--cases", args.cases, "--calls", str(args.calls)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    summarise(run.stdout)


if __name__ == "__main__":
    main()
