"""A/B timing of the GNA forward kernel under environment settings its FFI handler reads at
every call (``JAXK_GNA_*``), in one process on one compiled program, configurations
interleaved round by round (each round starting with the next configuration) so that clock and
thermal drift hit all of them alike. Run on the GPU machine::

    python tools/gna_env_ab.py base: pf8:JAXK_GNA_Q_PREFETCH=8 [--cases flux4k_gna,hunyuan_gna]
        [--rounds 3] [--out ab.json]

Prints one line per (case, configuration): the median of its rounds' median ms, and the ratio
to the first configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_gna as bg  # noqa: E402


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:VAR=VALUE[,VAR=VALUE...]`` (``NAME:`` alone: no variables)."""
    name, _, rest = text.partition(":")
    env = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, env


def timed(fn, args, env: dict[str, str]) -> float:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return bg.time_fn(fn, args)["median_s"]
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", help="NAME:VAR=VALUE[,VAR=VALUE...]")
    ap.add_argument("--cases", default="flux4k_gna,hunyuan_gna")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    configs = [parse_config(c) for c in args.configs]
    rows = []
    for case in args.cases.split(","):
        fn, qkv, *_ = bg.gna_call(bg.CASES[case], jax.random.PRNGKey(0))
        samples = {name: [] for name, _ in configs}
        for r in range(args.rounds):
            for name, env in bg.rotated(configs, r):
                samples[name].append(1e3 * timed(fn, qkv, env))
        base = float(np.median(samples[configs[0][0]]))
        for name, env in configs:
            ms = float(np.median(samples[name]))
            row = {"case": case, "config": name, "env": env, "ms": ms, "rounds_ms": samples[name]}
            row["ratio_to_first"] = ms / base
            rows.append(row)
            rounds = " ".join(f"{s:.3f}" for s in samples[name])
            print(
                f"{case:16s} {name:12s} {ms:8.3f} ms  x{base / ms:6.4f} faster than "
                f"{configs[0][0]}  ({rounds})",
                flush=True,
            )
    if args.out:
        meta = {
            "gpu": jax.devices()[0].device_kind,
            "jax": jax.__version__,
            "python": platform.python_version(),
        }
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
