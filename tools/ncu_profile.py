"""One call of each function of a benchmark case, between cuProfilerStart/Stop, for Nsight Compute.

Run on the GPU machine under ncu, e.g.::

    ncu --clock-control none --profile-from-start off --section SpeedOfLight \\
        python tools/ncu_profile.py symcon MP-L 10000
    ncu ... python tools/ncu_profile.py gna flux4k_na

Everything is compiled and run once before the profiled range, so only the timed kernels of
``bench/bench_symcon.py`` / ``bench/bench_gna.py`` appear in the report.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def _profiled(calls) -> None:
    for fn, args in calls:  # compile and warm up outside the range
        jax.block_until_ready(fn(*args))
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuProfilerStart()
    for fn, args in calls:
        jax.block_until_ready(fn(*args))
    cuda.cuProfilerStop()


def symcon(model: str, n: int) -> None:
    import bench_symcon as bs

    from jax_mace.symmetric_contraction.jit import symmetric_contraction_jit

    paths, x, w, sp, g = bs.case_inputs(model, n)

    def ours(x_, w_):
        return symmetric_contraction_jit(x_, w_, sp, paths)

    calls = [(jax.jit(ours), (x, w)), (bs.fwd_bwd(ours, g), (x, w))]
    try:
        fwd_c, w_c, x_c, g_c = bs.cueq_case(model, x, w, sp, g)
        calls += [(jax.jit(fwd_c), (w_c, x_c)), (bs.fwd_bwd(fwd_c, g_c), (w_c, x_c))]
    except ImportError as err:
        print(f"cuEquivariance not profiled: {err}")
    _profiled(calls)


def gna(case: str) -> None:
    import bench_gna as bg

    fn, qkv, *_ = bg.gna_call(bg.CASES[case], jax.random.key(0))
    _profiled([(fn, qkv)])


if __name__ == "__main__":
    if sys.argv[1] == "symcon":
        symcon(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "gna":
        gna(sys.argv[2])
    else:
        raise SystemExit("usage: ncu_profile.py symcon MODEL N | gna CASE")
