"""A MACE-MP-medium training step (energy + forces, force weight 1000) on a realistic batch, with
the symmetric contraction on the CUDA engine vs the pure-JAX reference, and a breakdown.

Batch: 24 random non-periodic clusters of 48 atoms (89 species, minimum distance 1.6 A, about
40 neighbours per atom inside r_max = 6 A), padded to 1280 nodes. The breakdown times the two
layers' symmetric contractions alone (forward, backward and the second-order pass of the force
loss, same shapes) inside the step's total; the rest is the interaction blocks, readouts,
spherical harmonics and the optimizer-free parameter gradient.

    python bench/bench_symcon_train.py   (or bench_symcon.py --train)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cluster(rng, atoms: int, density: float, r_max: float, num_species: int):
    from jax_mace.data.synthetic import random_cluster

    side = (atoms / density) ** (1.0 / 3.0)
    return random_cluster(rng, atoms, side, 1.6, r_max, num_species)


def _timeit(fn, *args, reps: int = 5, iters: int = 10) -> float:
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(iters):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) / iters * 1e3)
    return float(np.median(samples))


def train_step_bench(
    n_graph: int = 24, atoms: int = 48, seed: int = 0, backends=("cuda", "cuda-engine", "reference")
) -> dict:
    from flax import nnx

    from jax_mace.data.graph import pad_graphs
    from jax_mace.model import MACE, predict, preset
    from jax_mace.symmetric_contraction.dispatch import contract
    from jax_mace.symmetric_contraction.paths import build_path_list

    rng = np.random.default_rng(seed)
    r_max = 6.0
    graphs = [_cluster(rng, atoms, 0.06, r_max, 89) for _ in range(n_graph)]
    n_node = (n_graph * atoms // 128 + 1) * 128
    n_edge = int(np.ceil(sum(g.num_edges for g in graphs) / 1024 + 1) * 1024)
    batch = jax.device_put(pad_graphs(graphs, n_node, n_edge, n_graph + 1))
    edges_per_atom = sum(g.num_edges for g in graphs) / (n_graph * atoms)
    result = {
        "model": "mp0-medium",
        "n_graph": n_graph,
        "atoms": n_graph * atoms,
        "n_node_padded": n_node,
        "n_edge_padded": n_edge,
        "edges_per_atom": edges_per_atom,
    }

    def make_step(backend):
        cfg = preset("mp0-medium", contraction_backend=backend, avg_num_neighbors=edges_per_atom)
        model = MACE(cfg, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)

        def loss(state_, batch_):
            pred = predict(nnx.merge(graphdef, state_), batch_)
            e_err = (pred["energy"] - batch_.energy) * batch_.graph_mask
            f_err = (pred["forces"] - batch_.forces) * batch_.node_mask[:, None]
            return jnp.mean(e_err**2) + 1000.0 * jnp.mean(f_err**2)

        return jax.jit(jax.value_and_grad(loss)), state

    grads = {}
    for backend in backends:
        step, state = make_step(backend)
        t0 = time.perf_counter()
        loss_val, grads[backend] = jax.block_until_ready(step(state, batch))
        result[f"{backend}_compile_and_first_s"] = time.perf_counter() - t0
        result[f"{backend}_loss"] = float(loss_val)
        result[f"{backend}_step_ms"] = _timeit(step, state, batch)
    # Default matmul precision: the reference's matmuls run in TF32.
    b = jax.tree.leaves(grads[backends[-1]])
    for k in backends[:-1]:
        a = jax.tree.leaves(grads[k])
        num = sum(float(jnp.sum((u - v) ** 2)) for u, v in zip(a, b, strict=True))
        den = sum(float(jnp.sum(v**2)) for v in b)
        result[f"{k}_grad_rel_diff_vs_{backends[-1]}"] = float(np.sqrt(num / den))

    # The contractions alone: layer 1 (0e+1o+2e+3o -> 0e+1o), layer 2 (-> 0e), force-loss order.
    sp = batch.species
    parts = {}
    for backend in backends:
        total = 0.0
        for irreps_out in ("0e+1o", "0e"):
            paths = build_path_list("0e+1o+2e+3o", irreps_out, 3)
            x = jnp.asarray(rng.normal(size=(n_node, 128, 16)), jnp.float32)
            w = jnp.asarray(rng.normal(size=(89, paths.num_weights, 128)), jnp.float32)

            def energy(x_, w_, paths=paths, backend=backend):
                return jnp.sum(contract(x_, w_, sp, paths, backend=backend) ** 2)

            def force_loss(x_, w_, energy=energy):
                return energy(x_, w_) + jnp.sum(jax.grad(energy)(x_, w_) ** 2)

            total += _timeit(jax.jit(jax.grad(force_loss, argnums=(0, 1))), x, w)
        parts[backend] = total
    result["contraction_only_ms"] = parts
    for backend in backends:
        result[f"{backend}_rest_ms"] = result[f"{backend}_step_ms"] - parts[backend]
    for k in backends:
        result[f"{k}_step_speedup_vs_reference"] = (
            result[f"{backends[-1]}_step_ms"] / result[f"{k}_step_ms"]
        )
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for symcon_train_<gpu>.json")
    args = ap.parse_args()
    res = train_step_bench()
    res["gpu"] = jax.devices()[0].device_kind
    print(json.dumps(res, indent=1))
    if args.out:
        from bench_symcon import results_file  # this folder: run as bench/bench_symcon_train.py

        results_file(args.out, "symcon_train", res["gpu"]).write_text(json.dumps(res, indent=1))
