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
import jax.numpy as jnp
import numpy as np

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
    from jax_mace.symmetric_contraction.paths import build_path_list

    paths = build_path_list(bs.IRREPS_IN, bs.MODELS[model], 3)
    k, m, nw = paths.num_in, paths.num_out, paths.num_weights
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, bs.CHANNELS, k)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(bs.SPECIES, nw, bs.CHANNELS)) / np.sqrt(nw), jnp.float32)
    sp = jnp.asarray(rng.integers(0, bs.SPECIES, n), jnp.int32)
    g = jnp.asarray(rng.normal(size=(n, bs.CHANNELS, m)), jnp.float32)

    def ours(x_, w_):
        return symmetric_contraction_jit(x_, w_, sp, paths)

    def fb_of(f, gg):
        return jax.jit(jax.value_and_grad(lambda a, b: jnp.vdot(f(a, b), gg), argnums=(0, 1)))

    calls = [(jax.jit(ours), (x, w)), (fb_of(ours, g), (x, w))]
    try:
        fwd_c, wdim, out_dim = bs._cueq_fns(bs.MODELS[model], sp)
        x_c = jnp.swapaxes(x, 1, 2).reshape(n, k * bs.CHANNELS)
        w_c = w.reshape(bs.SPECIES, wdim)
        g_c = jnp.swapaxes(g, 1, 2).reshape(n, out_dim)
        calls += [(jax.jit(fwd_c), (w_c, x_c)), (fb_of(fwd_c, g_c), (w_c, x_c))]
    except ImportError as err:
        print(f"cuEquivariance not profiled: {err}")
    _profiled(calls)


def gna(case: str) -> None:
    import bench_gna as bg

    from jax_gna import cuda_backend
    from simulator.geometry import make_params

    grid, window, stride, heads, tile = bg.CASES[case]
    params = make_params(grid, window, stride)
    q_tile, kv_tile = cuda_backend.resolve_tiles(params, bg.HEAD_DIM, tile, tile)
    shape = (1, *grid, heads, bg.HEAD_DIM)
    q, k, v = (jax.random.normal(jax.random.key(i), shape, jnp.bfloat16) for i in range(3))
    scale = bg.HEAD_DIM**-0.5
    fn = jax.jit(
        lambda q, k, v: cuda_backend.gna_forward_cuda(q, k, v, params, scale, q_tile, kv_tile)[0]
    )
    _profiled([(fn, (q, k, v))])


if __name__ == "__main__":
    if sys.argv[1] == "symcon":
        symcon(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "gna":
        gna(sys.argv[2])
    else:
        raise SystemExit("usage: ncu_profile.py symcon MODEL N | gna CASE")
