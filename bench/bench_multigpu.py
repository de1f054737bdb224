"""Multi-device training throughput: balanced plans vs fixed-count batching, 1 -> N devices.

Data: a long-tailed mix of ASE structures (periodic supercells of 1 to ~250 atoms and small
molecules; random labels, since only time is measured), graphs from the MACE data pipeline.
Model: ``--model mace`` (jax_mace.model, 2 layers, l_max 3, correlation 3, ``--hidden`` irreps,
with jax_mace.train's energy + forces loss) or ``--model toy`` (an MLP on species plus a radial
pair term, with forces). Each device takes its padded batch from the plan; the
step is the data-parallel ``jax_mace.distributed.make_train_step`` (losses normalised by global
real counts). For each device count and method: compile time, median step time, throughput
(real graphs/s and real edges/s), the plan's waste and max/mean load. Scaling efficiency =
throughput(N) / (N * throughput(1)). Writes multigpu_<model>_results.json to --out (rewritten
after every configuration).

    python bench/bench_multigpu.py --model mace --devices 1,2 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_graphs(n: int, r_max: float, seed: int = 0):
    """Long-tailed mix of solids and molecules -> jax_mace.data.Graph list and z table."""
    from ase.build import bulk, molecule
    from ase.collections import g2

    from jax_mace.data import Configuration, configurations_to_graphs, element_table

    rng = np.random.default_rng(seed)
    solids = [
        ("Cu", "fcc", 3.61),
        ("Al", "fcc", 4.05),
        ("Si", "diamond", 5.43),
        ("NaCl", "rocksalt", 5.64),
        ("MgO", "rocksalt", 4.21),
        ("Fe", "bcc", 2.87),
        ("GaAs", "zincblende", 5.65),
        ("C", "diamond", 3.57),
    ]
    names = [m for m in g2.names if len(molecule(m)) > 1]
    configs = []
    for k in range(n):
        if rng.random() < 0.7:
            sym, kind, a = solids[rng.integers(len(solids))]
            atoms = bulk(sym, kind, a=a * rng.uniform(0.97, 1.05), cubic=bool(rng.random() < 0.5))
            reps = np.clip(np.round(np.exp(rng.normal(0.5, 0.5, 3))), 1, 4).astype(int)
            atoms = atoms.repeat(tuple(reps))
        else:
            atoms = molecule(names[rng.integers(len(names))])
        atoms.rattle(0.03, seed=int(rng.integers(1 << 31)))
        configs.append(
            Configuration(
                atomic_numbers=atoms.numbers.copy(),
                positions=atoms.positions.copy(),
                cell=np.asarray(atoms.cell.array),
                pbc=np.asarray(atoms.pbc),
                energy=float(rng.normal() * len(atoms)),
                forces=rng.normal(0, 0.5, (len(atoms), 3)),
                label=f"bench {k}",
            )
        )
    z_table = element_table(configs)
    return configurations_to_graphs(configs, z_table, r_max), z_table


def toy_model(num_species: int, seed: int = 0):
    import jax
    import jax.numpy as jnp

    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {
        "embed": jax.random.normal(k1, (num_species, 128)) * 0.1,
        "w1": jax.random.normal(k2, (128, 128)) * 0.1,
        "w2": jax.random.normal(k3, (128, 1)) * 0.1,
        "radial": jax.random.normal(k4, (8, 128)) * 0.1,
    }

    def energy_fn(p, positions, b):
        vec = positions[b.receivers] - positions[b.senders] + b.edge_shifts()
        r = jnp.sqrt(jnp.sum(vec**2, -1) + 1e-9)
        n = jnp.arange(1, 9, dtype=r.dtype)
        basis = jnp.sin(n * jnp.pi * r[:, None] / 5.0) / r[:, None]
        msg = jnp.where(b.edge_mask[:, None], jnp.tanh(basis @ p["radial"]), 0.0)
        h = p["embed"][b.species] + jax.ops.segment_sum(msg, b.receivers, b.n_node)
        e = (jnp.tanh(h @ p["w1"]) @ p["w2"])[:, 0]
        e = jnp.where(b.node_mask, e, 0.0)
        return jax.ops.segment_sum(e, b.node_graph, b.n_graph)

    return params, energy_fn


def mace_model(z_table, r_max: float, avg_num_neighbors: float, hidden: str, seed: int = 0):
    """jax_mace.model.MACE (2 layers, l_max 3, correlation 3) with jax_mace.train's loss
    (energy per atom, forces x10) in (sums, counts) form: (params, loss_fn)."""
    from flax import nnx

    from jax_mace.distributed import mace_loss_fn
    from jax_mace.model import MACE, MACEConfig

    config = MACEConfig(
        atomic_numbers=tuple(z_table),
        r_max=r_max,
        hidden_irreps=hidden,
        avg_num_neighbors=avg_num_neighbors,
    )
    graphdef, params = nnx.split(MACE(config, rngs=nnx.Rngs(seed)))
    return params, mace_loss_fn(graphdef, {"energy": 1.0, "forces": 10.0, "stress": 0.0})


def make_loss(energy_fn, forces_weight: float = 10.0):
    import jax
    import jax.numpy as jnp

    def loss_fn(p, b):
        def total(pos):
            e = energy_fn(p, pos, b)
            return jnp.sum(e), e

        (_, e), grad = jax.value_and_grad(total, has_aux=True)(b.positions)
        f = -grad
        n_atoms = jnp.maximum(b.num_nodes, 1).astype(e.dtype)
        de = jnp.where(b.energy_mask, (e - b.energy) / n_atoms, 0.0)
        df = jnp.where(b.forces_mask[:, None], f - b.forces, 0.0)
        sums = {"energy": jnp.sum(de**2), "forces": forces_weight * jnp.sum(df**2)}
        counts = {"energy": jnp.sum(b.energy_mask), "forces": 3 * jnp.sum(b.forces_mask)}
        return sums, counts

    return loss_fn


def run_config(plan, graphs, params, loss_fn, devices, max_steps, time_limit, edges):
    import jax
    import optax

    from jax_mace.distributed import data_mesh, make_train_step, shard_batch
    from jax_mace.loader import PlanLoader, graph_batch_maker

    mesh = data_mesh(devices)
    opt = optax.adam(1e-3)
    step = make_train_step(loss_fn, opt, mesh, donate=True)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = jax.device_put(jax.tree.map(np.array, params), replicated)  # fresh buffers
    state = jax.device_put(opt.init(params), replicated)
    loader = PlanLoader(
        plan, graph_batch_maker(graphs), prefetch=3, put=lambda x: shard_batch(x, mesh)
    )
    times, graphs_done, edges_done = [], 0, 0
    t_compile = None
    with loader:
        for s, batch in enumerate(loader):
            t0 = time.perf_counter()
            params, state, metrics = step(params, state, batch)
            jax.block_until_ready(metrics["loss"])
            dt = time.perf_counter() - t0
            if s == 0:
                t_compile = dt
                t_start = time.perf_counter()
                continue
            times.append(dt)
            idx = np.concatenate([plan.batch(s, d) for d in range(plan.num_devices)])
            graphs_done += idx.size
            edges_done += int(edges[idx].sum())
            if len(times) >= max_steps or time.perf_counter() - t_start > time_limit:
                break
    wall = time.perf_counter() - t_start
    stats = plan.summary()
    return {
        "num_devices": len(devices),
        "method": plan.method,
        "capacities": stats["capacities"],
        "waste": stats["waste"],
        "worst_max_over_mean": stats["worst_max_over_mean"],
        "mean_max_over_mean": stats["mean_max_over_mean"],
        "steps_per_epoch": plan.num_steps,
        "compile_and_first_step_s": t_compile,
        "timed_steps": len(times),
        "step_time_median_s": float(np.median(times)) if times else None,
        "step_time_min_s": float(np.min(times)) if times else None,
        "graphs_per_s": graphs_done / wall if times else None,
        "real_edges_per_s": edges_done / wall if times else None,
        "final_loss": float(metrics["loss"]),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["mace", "toy"], default="mace")
    parser.add_argument("--num-graphs", type=int, default=3000)
    parser.add_argument("--devices", default="1,2", help="device counts to run, e.g. 1,2,4")
    parser.add_argument(
        "--graphs-per-device",
        type=int,
        default=32,
        help="balanced: at least this many mean graphs per batch",
    )
    parser.add_argument("--r-max", type=float, default=5.0)
    parser.add_argument("--hidden", default="64x0e+64x1o", help="MACE hidden irreps")
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--time-per-config", type=float, default=20.0)
    parser.add_argument("--deadline", type=float, default=1e9, help="skip configs after (s)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    import jax

    from jax_mace.balance import EpochPlanner, baselines

    t0 = time.perf_counter()
    graphs, z_table = build_graphs(args.num_graphs, args.r_max)
    nodes = np.array([g.num_nodes for g in graphs])
    edges = np.array([g.num_edges for g in graphs])
    print(
        f"{len(graphs)} graphs in {time.perf_counter() - t0:.1f} s: nodes mean "
        f"{nodes.mean():.1f} max {nodes.max()}, edges mean {edges.mean():.0f} max "
        f"{edges.max()}",
        flush=True,
    )
    if args.model == "mace":
        avg = float(edges.sum() / nodes.sum())
        params, loss_fn = mace_model(z_table, args.r_max, avg, args.hidden)
    else:
        params, energy_fn = toy_model(len(z_table))
        loss_fn = make_loss(energy_fn)
    counts = [int(c) for c in args.devices.split(",")]
    all_devices = jax.devices()
    if max(counts) > len(all_devices):
        raise ValueError(f"--devices asks for {max(counts)} devices, {len(all_devices)} visible")
    results = {
        "model": args.model,
        "hidden_irreps": args.hidden if args.model == "mace" else None,
        "devices": [str(d) for d in all_devices],
        "device_kind": all_devices[0].device_kind,
        "jax": jax.__version__,
        "platform": platform.platform(),
        "num_graphs": len(graphs),
        "nodes_mean": float(nodes.mean()),
        "nodes_max": int(nodes.max()),
        "edges_mean": float(edges.mean()),
        "edges_max": int(edges.max()),
        "runs": [],
    }
    # Per-device capacities: the balanced plan's at the largest device count, reused for every
    # count, so per-device work is the same and scaling is comparable. Fixed count takes the
    # same number of graphs per device on average (same steps per epoch); its capacities are
    # the smallest fitting its epoch (the most favourable static shape).
    top = max(counts)
    first = EpochPlanner(nodes, edges, top, min_graphs_per_batch=args.graphs_per_device)
    c = first.capacities
    caps = {"max_nodes": c[0], "max_edges": c[1], "max_graphs": c[2]}
    g = max(1, round(len(graphs) / first.num_bins))
    results["graphs_per_device_fixed"] = g
    # Most important first (a deadline may cut the rest): N-device balanced vs fixed, then 1.
    order = [(top, "balanced"), (top, "fixed_count")]
    order += [(d, m) for d in sorted(counts) if d != top for m in ("balanced", "fixed_count")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"multigpu_{args.model}_results.json"
    for d, method in order:
        if time.perf_counter() - t0 > args.deadline:
            print(f"deadline reached, skipping {method} on {d} devices", flush=True)
            continue
        if method == "balanced":
            plan = EpochPlanner(nodes, edges, d, **caps).plan(0)
        else:
            plan = baselines.fixed_count(nodes, edges, d, g)
        r = run_config(
            plan,
            graphs,
            params,
            loss_fn,
            all_devices[:d],
            args.max_steps,
            args.time_per_config,
            edges,
        )
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
        _derive(results)
        path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


def _derive(results: dict) -> None:
    """Speed-up of balanced over fixed count, and scaling efficiency vs the fewest devices."""
    runs = {(r["num_devices"], r["method"]): r for r in results["runs"]}
    fewest = min(d for d, _ in runs)
    for (d, method), r in runs.items():
        fixed = runs.get((d, "fixed_count"))
        if method == "balanced" and fixed and fixed["graphs_per_s"] and r["graphs_per_s"]:
            r["speedup_vs_fixed_count"] = r["graphs_per_s"] / fixed["graphs_per_s"]
        base = runs.get((fewest, method))
        if base and d != fewest and base["graphs_per_s"] and r["graphs_per_s"]:
            r["scaling_efficiency"] = r["graphs_per_s"] / (d / fewest * base["graphs_per_s"])


if __name__ == "__main__":
    main()
