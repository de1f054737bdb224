"""Forces-only symmetric contraction: the gradient for ``x`` with the weights constant.

This is what molecular dynamics and force inference run. Our ``"cuda"`` backend then uses the
gx-only backward on unsorted nodes (no species sort, no weight-gradient sums). It is timed
against cuEquivariance-JAX ``uniform_1d``'s gradient for ``x`` in the same run, on the inputs
of ``bench_symcon.py``. Also timed: ours with the weights differentiated too (the training
case), for comparison.

Run on the GPU machine::

    python bench/bench_symcon_forces.py --out bench/results

Writes ``symcon_forces_<GPU>.json``: median ms per call, speedup = cuEquivariance time / ours.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_symcon as bs  # noqa: E402

from jax_mace.symmetric_contraction.jit import symmetric_contraction_jit  # noqa: E402


def forces_case(model: str, n: int) -> dict:
    """Median ms of the x-gradient of ``vdot(out, g)``: ours, cuEquivariance, ours with W too."""
    paths, x, w, sp, g = bs.case_inputs(model, n)

    def ours(a, b):
        return symmetric_contraction_jit(a, b, sp, paths)

    fwd_c, w_c, x_c, g_c = bs.cueq_case(model, x, w, sp, g)
    forces = jax.jit(jax.grad(lambda a: jnp.vdot(ours(a, w), g)))
    forces_c = jax.jit(jax.grad(lambda a: jnp.vdot(fwd_c(w_c, a), g_c)))
    row = {
        "model": model,
        "N": n,
        "ours_forces_ms": bs.timeit(forces, x)["median_ms"],
        "cueq_forces_ms": bs.timeit(forces_c, x_c)["median_ms"],
        "ours_fwdbwd_ms": bs.timeit(bs.fwd_bwd(ours, g), x, w)["median_ms"],
    }
    row["speedup_vs_cueq_forces"] = row["cueq_forces_ms"] / row["ours_forces_ms"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    info = bs.run_info()
    rows = []
    for model in bs.MODELS:
        for n in (10_000, 50_000):
            rows.append(forces_case(model, n))
            print(json.dumps(rows[-1]), flush=True)
    result = {"info": info, "cases": rows}
    bs.results_file(args.out, "symcon_forces", info["gpu"]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
