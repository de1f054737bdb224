"""The pure-JAX GNA reference on a large 3-D grid: runs without materialising N x N scores.

16x64x64 tokens (65,536), 16 heads, head_dim 64, bf16, window 3x7x7: times the forward and the
forward+backward on the default device and records the compiled temporary memory next to what
dense scores would need. Writes ``bench/results/gna_reference_<device>.json``.

    python bench/bench_gna_reference.py [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jax_gna


def timed(fn, *args, repeats: int = 3) -> list[float]:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    shape, heads, dim, window = (16, 64, 64), 16, 64, (3, 7, 7)
    rng = np.random.default_rng(0)
    q, k, v = (
        jnp.asarray(rng.standard_normal((1, *shape, heads, dim)), jnp.bfloat16) for _ in range(3)
    )

    def fwd(q, k, v):
        return jax_gna.na3d(q, k, v, window, backend="reference")

    def fwd_bwd(q, k, v):
        return jax.grad(lambda q, k, v: jnp.sum(fwd(q, k, v).astype(jnp.float32)), (0, 1, 2))(
            q, k, v
        )

    results = {}
    for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        compiled = jax.jit(fn).lower(q, k, v).compile()
        memory = compiled.memory_analysis()
        times = timed(compiled, q, k, v)
        results[name] = {
            "times_s": times,
            "median_s": float(np.median(times)),
            "temp_bytes": None if memory is None else int(memory.temp_size_in_bytes),
        }
        print(f"{name}: median {np.median(times):.3f} s, temp memory "
              f"{results[name]['temp_bytes'] / 2**30:.2f} GiB")  # fmt: skip
    tokens = int(np.prod(shape))
    device = jax.devices()[0]
    record = {
        "benchmark": "gna_reference_3d",
        "device": device.device_kind,
        "platform": device.platform,
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "grid": shape,
        "heads": heads,
        "head_dim": dim,
        "window": window,
        "dtype": "bfloat16",
        "dense_scores_bytes_fp32": tokens * tokens * heads * 4,
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = device.device_kind.replace(" ", "_").lower()
    path = out / f"gna_reference_{device.platform}_{name}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
