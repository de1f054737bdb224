"""A/B timing of the specialised symmetric-contraction kernels under several configurations.

Each configuration is a set of environment variables (the ``JAX_MACE_SYMJIT_*`` tuning knobs,
read when kernels are generated and launched) and runs in its own process, on the inputs of
``bench/bench_symcon.py``; cuEquivariance is timed once, in the first process. Run on the GPU
machine::

    python tools/symcon_ab.py base:JAX_MACE_SYMJIT_SPLIT=0 split:JAX_MACE_SYMJIT_SPLIT=1 \\
        [--models MP-S,MP-M,MP-L] [--sizes 10000,50000] [--out ab.json]

Prints one line per (configuration, model, size): forward and forward+backward median ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(models: list[str], sizes: list[int], cueq: bool) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_symcon as bs
    import jax

    import jax_mace
    from jax_mace.symmetric_contraction import cuda as cu
    from jax_mace.symmetric_contraction.jit import symmetric_contraction_jit

    assert jax_mace.cuda_status().has("jaxk_symcon_sort")  # registers the FFI targets
    for model in models:
        for n in sizes:
            paths, x, w, sp, g = bs.case_inputs(model, n)

            def ours(x_, w_, sp=sp, paths=paths):
                return symmetric_contraction_jit(x_, w_, sp, paths)

            row = {"model": model, "N": n}
            sort = jax.jit(lambda s_: cu._sort(s_, bs.SPECIES))
            row["sort_ms"] = bs.timeit(sort, sp)["median_ms"]
            row["fwd_ms"] = bs.timeit(jax.jit(ours), x, w)["median_ms"]
            row["fwdbwd_ms"] = bs.timeit(bs.fwd_bwd(ours, g), x, w)["median_ms"]
            if cueq:
                fwd_c, w_c, x_c, g_c = bs.cueq_case(model, x, w, sp, g)
                row["cueq_fwd_ms"] = bs.timeit(jax.jit(fwd_c), w_c, x_c)["median_ms"]
                row["cueq_fwdbwd_ms"] = bs.timeit(bs.fwd_bwd(fwd_c, g_c), w_c, x_c)["median_ms"]
            print("ROW " + json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", help="NAME:VAR=VALUE[,VAR=VALUE...]")
    ap.add_argument("--models", default="MP-S,MP-M,MP-L")
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--no-cueq", action="store_true")
    ap.add_argument("--out", default=None, help="write all rows as JSON here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    models = args.models.split(",")
    sizes = [int(v) for v in args.sizes.split(",")]
    if args.child:
        child(models, sizes, cueq=not args.no_cueq)
        return
    if not args.configs:
        ap.error("give at least one configuration")
    rows = []
    for i, config in enumerate(args.configs):
        name, _, assignments = config.partition(":")
        env = dict(os.environ)
        for item in filter(None, re.split(r",(?=[A-Z_]+=)", assignments)):
            var, _, value = item.partition("=")
            env[var] = value
        cmd = [sys.executable, __file__, "--child", "--models", args.models]
        cmd += ["--sizes", args.sizes] + (["--no-cueq"] if i or args.no_cueq else [])
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{name}: failed\n{run.stderr[-3000:]}", flush=True)
            continue
        for line in run.stdout.splitlines():
            if not line.startswith("ROW "):
                continue
            row = {"config": name, "env": assignments, **json.loads(line[4:])}
            rows.append(row)
            extra = ""
            if "cueq_fwd_ms" in row:
                extra = f"  cueq {row['cueq_fwd_ms']:.4f} / {row['cueq_fwdbwd_ms']:.4f}"
            print(
                f"{name:>14} {row['model']} N={row['N']:>6}  sort {row['sort_ms']:.4f}"
                f"  fwd {row['fwd_ms']:.4f}"
                f"  fwd+bwd {row['fwdbwd_ms']:.4f}{extra}",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
