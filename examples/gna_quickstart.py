"""GNA quickstart: strided neighborhood attention on an image-sized 2-D token grid.

Prints the simulator's speedup bound for the configuration, runs ``jax_gna.na2d`` (whichever
backend is available; ``--backend`` forces one), and checks the output of random queries against
an exact float64 evaluation of their neighbourhoods.

    python examples/gna_quickstart.py [--backend reference|cuda]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_gna
import simulator
from simulator import geometry


def exact_rows(q, k, v, params, rows, scale):
    """float64 attention output of the queries at grid positions ``rows`` ([R, 2])."""
    masks = [geometry.axis_mask(n, w, s, d, c) for n, w, s, d, c in params.axes()]
    out = []
    for r, c in rows:
        visible = np.outer(masks[0][r], masks[1][c])  # [H, W] keys visible to query (r, c)
        keys = np.asarray(k[0], np.float64)[visible]  # [n_keys, heads, dim]
        vals = np.asarray(v[0], np.float64)[visible]
        scores = np.einsum("hd,khd->hk", np.asarray(q[0, r, c], np.float64), keys) * scale
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        out.append(np.einsum("hk,khd->hd", probs, vals))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["reference", "cuda"], default=None)
    parser.add_argument("--size", type=int, default=128, help="grid is size x size tokens")
    args = parser.parse_args()

    shape, window, stride = (args.size, args.size), (32, 32), (8, 8)
    heads, head_dim = 4, 32
    status = jax_gna.cuda_status()
    kernel = "built" if status.available else f"not used ({status.reason})"
    print(f"JAX {jax.__version__} on {jax.default_backend()}; GNA CUDA kernel: {kernel}")
    print(f"grid {shape}, window {window}, stride {stride}, {heads} heads x {head_dim}")

    sim = simulator.simulate(shape, window, stride, q_tile=(16, 8), kv_tile=(16, 8))
    print(
        f"simulator (static tiling, tiles 16x8): speedup bound {sim.speedup_bound:.2f}x, "
        f"FLOP bound {sim.flop_bound:.2f}x, perfectly block-sparse: {sim.perfectly_block_sparse}"
    )

    rng = np.random.default_rng(0)
    q, k, v = (
        jnp.asarray(rng.standard_normal((1, *shape, heads, head_dim)), jnp.float32)
        for _ in range(3)
    )
    attend = jax.jit(lambda q, k, v: jax_gna.na2d(q, k, v, window, stride, backend=args.backend))
    out = attend(q, k, v).block_until_ready()
    print(f"backend: {jax_gna.last_backend().name} ({jax_gna.last_backend().reason})")
    start = time.perf_counter()
    out = attend(q, k, v).block_until_ready()
    print(f"na2d: output {out.shape} {out.dtype} in {1e3 * (time.perf_counter() - start):.1f} ms")

    params = geometry.make_params(shape, window, stride)
    rows = rng.integers(0, shape[0], size=(32, 2))
    want = exact_rows(q, k, v, params, rows, head_dim**-0.5)
    got = np.asarray(out)[0, rows[:, 0], rows[:, 1]]
    err = float(np.abs(got - want).max())
    print(f"output check vs exact float64 on 32 random queries: max abs error {err:.2e}")
    if not err < 1e-4:
        raise SystemExit("output check FAILED")
    print("output check passed")


if __name__ == "__main__":
    main()
