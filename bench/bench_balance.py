"""Balanced data distribution vs the baselines, on three size distributions.

(a) synthetic MPtrj-like (1.58M graphs: lognormal atoms per structure, median 22, clipped to
    [1, 444]; neighbours per atom ~ N(44, 15) clipped to [4, 160]);
(b) a mixed set of periodic solids, molecules and water boxes built with ASE, with real
    neighbour counts from matscipy at a 6 A cutoff;
(c) rMD17 aspirin (shared/data/rmd17_aspirin_train.xyz), matscipy at 5 A.

For each: padded-compute waste (nodes, edges, cost), mean and worst max/mean predicted load per
step, steps per epoch and planning time, for fixed count per device (MACE), greedy streaming
fill (jraph), largest-first-to-lightest-device per step (fairchem) and the balanced planner.
Plus the planning time of 2.6M graphs. Writes bench/results/balance_results.json.

    python bench/bench_balance.py [--quick] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jax_mace.balance import (  # noqa: E402
    CostModel,
    EpochPlanner,
    baselines,  # noqa: E402
)

ASPIRIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "rmd17_aspirin_train.xyz"


# ----------------------------------------------------------------------------------- data sets
def mptrj_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic MPtrj-like (nodes, directed edges) per graph."""
    rng = np.random.default_rng(seed)
    nodes = np.clip(np.round(np.exp(rng.normal(np.log(22.0), 0.83, n))), 1, 444).astype(np.int64)
    per_atom = np.clip(rng.normal(44.0, 15.0, n), 4.0, 160.0)
    return nodes, np.round(nodes * per_atom).astype(np.int64)


def neighbour_count(atoms, cutoff: float) -> int:
    """Directed edges within ``cutoff`` (periodic images included where the cell is periodic)."""
    from matscipy.neighbours import neighbour_list

    if not atoms.pbc.any():  # matscipy bins by the cell: give a finite molecule a box
        atoms = atoms.copy()
        extent = atoms.positions.max(axis=0) - atoms.positions.min(axis=0)
        atoms.set_cell(np.diag(extent + 2 * cutoff + 1.0))
        atoms.center()
    return int(neighbour_list("i", atoms, cutoff).size)


_SOLIDS = [
    ("Cu", "fcc", 3.61, None),
    ("Al", "fcc", 4.05, None),
    ("Ni", "fcc", 3.52, None),
    ("Au", "fcc", 4.08, None),
    ("Fe", "bcc", 2.87, None),
    ("W", "bcc", 3.16, None),
    ("Na", "bcc", 4.23, None),
    ("Si", "diamond", 5.43, None),
    ("C", "diamond", 3.57, None),
    ("Ge", "diamond", 5.66, None),
    ("NaCl", "rocksalt", 5.64, None),
    ("MgO", "rocksalt", 4.21, None),
    ("LiF", "rocksalt", 4.03, None),
    ("GaAs", "zincblende", 5.65, None),
    ("ZnS", "zincblende", 5.41, None),
    ("Mg", "hcp", 3.21, 5.21),
    ("Ti", "hcp", 2.95, 4.68),
    ("CsCl", "cesiumchloride", 4.12, None),
]


def ase_mixed(n: int, seed: int = 0, cutoff: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Periodic solids (strained, rattled supercells with vacancies), g2 molecules and periodic
    water boxes, built with ASE; real neighbour counts."""
    from ase import Atoms
    from ase.build import bulk, molecule
    from ase.collections import g2

    rng = np.random.default_rng(seed)
    mol_names = list(g2.names) + ["C60", "biphenyl", "C7NH5", "BDA"]
    water = molecule("H2O")
    nodes, edges = np.empty(n, np.int64), np.empty(n, np.int64)
    for k in range(n):
        u = rng.random()
        if u < 0.55:
            sym, kind, a, c = _SOLIDS[rng.integers(len(_SOLIDS))]
            cubic = bool(rng.random() < 0.5) and kind != "hcp"
            atoms = (
                bulk(sym, kind, a=a, c=c, cubic=cubic) if c else bulk(sym, kind, a=a, cubic=cubic)
            )
            reps = np.clip(np.round(np.exp(rng.normal(0.6, 0.45, 3))), 1, 5).astype(int)
            atoms = atoms.repeat(tuple(reps))
            strain = np.eye(3) * (1 + rng.uniform(-0.06, 0.08)) + rng.normal(0, 0.02, (3, 3))
            atoms.set_cell(atoms.cell @ strain, scale_atoms=True)
            if len(atoms) > 4:
                drop = rng.random(len(atoms)) < rng.uniform(0, 0.06)
                del atoms[np.flatnonzero(drop)]
        elif u < 0.9:
            atoms = molecule(mol_names[rng.integers(len(mol_names))])
        else:
            m = int(rng.integers(4, 40))
            box = (m * 30.0) ** (1 / 3)  # ~1 g/cm3
            pos, num = [], []
            for _ in range(m):
                rot = water.copy()
                rot.rotate(rng.uniform(0, 360), rng.normal(size=3) + 1e-9)
                pos.append(rot.positions + rng.uniform(0, box, 3))
                num.append(rot.numbers)
            atoms = Atoms(
                numbers=np.concatenate(num), positions=np.concatenate(pos), cell=[box] * 3, pbc=True
            )
        atoms.rattle(0.05, seed=int(rng.integers(1 << 31)))
        nodes[k], edges[k] = len(atoms), neighbour_count(atoms, cutoff)
    return nodes, edges


def aspirin(path: Path = ASPIRIN, cutoff: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    from ase.io import read

    frames = read(str(path), index=":")
    nodes = np.array([len(f) for f in frames], dtype=np.int64)
    edges = np.array([neighbour_count(f, cutoff) for f in frames], dtype=np.int64)
    return nodes, edges


# ----------------------------------------------------------------------------------- methods
def compare(nodes, edges, num_devices: int, cost: CostModel, seed: int = 0) -> list[dict]:
    """All four methods on one data set; the baselines get the same number of steps (fixed
    count and LPT: graphs per device = N / batches of ours) or the same capacities (greedy)."""
    t0, c0 = time.perf_counter(), time.process_time()
    planner = EpochPlanner(nodes, edges, num_devices, cost=cost, seed=seed)
    plan = planner.plan(0)
    ours = plan.summary()
    ours["planning_seconds"] = time.perf_counter() - t0
    ours["planning_cpu_seconds"] = time.process_time() - c0
    t1 = time.perf_counter()
    planner.plan(1).check(nodes, edges)
    ours["next_epoch_seconds"] = time.perf_counter() - t1
    plan.check(nodes, edges)
    g = max(1, round(nodes.size / (plan.num_steps * num_devices)))
    rows = []
    for make in (
        lambda: baselines.fixed_count(nodes, edges, num_devices, g, cost=cost, seed=seed),
        lambda: baselines.greedy_stream(
            nodes, edges, num_devices, plan.capacities, cost=cost, seed=seed
        ),
        lambda: baselines.lpt_per_step(nodes, edges, num_devices, g, cost=cost, seed=seed),
    ):
        base = make()
        base.check(nodes, edges)
        rows.append(base.summary())
    rows.append(ours)
    for r in rows:
        r["graphs_per_device"] = g if r["method"] in ("fixed_count", "lpt_per_step") else None
    return rows


def planning_time(n: int, num_devices: int) -> dict:
    nodes, edges = mptrj_like(n, seed=1)
    t0, c0 = time.perf_counter(), time.process_time()
    planner = EpochPlanner(nodes, edges, num_devices)
    plan = planner.plan(0)
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    t1, c1 = time.perf_counter(), time.process_time()
    plan1 = planner.plan(1)
    second, second_cpu = time.perf_counter() - t1, time.process_time() - c1
    t2 = time.perf_counter()
    _ = plan1.steps  # materialise the list-of-lists view
    steps_list = time.perf_counter() - t2
    return {
        "num_graphs": n,
        "num_devices": num_devices,
        "first_epoch_seconds": first,
        "first_epoch_cpu_seconds": first_cpu,
        "next_epoch_seconds": second,
        "next_epoch_cpu_seconds": second_cpu,
        "load_average_1min": os.getloadavg()[0],
        "steps_list_seconds": steps_list,
        "waste": plan.waste,
        "worst_max_over_mean": float(plan.step_max_over_mean.max()),
        "num_steps": plan.num_steps,
    }


def table(rows: list[dict]) -> str:
    out = [
        "| method | steps | waste nodes | waste edges | waste cost | mean max/mean | "
        "worst max/mean | plan wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = r["waste"]
        out.append(
            f"| {r['method']} | {r['num_steps']} | {100 * w['nodes']:.1f}% | "
            f"{100 * w['edges']:.1f}% | {100 * w['cost']:.1f}% | {r['mean_max_over_mean']:.3f} | "
            f"{r['worst_max_over_mean']:.3f} | {r['planning_seconds']:.2f} |"
        )
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args(argv)
    cost = CostModel()
    n_a = 20_000 if args.quick else 1_580_000
    n_b = 500 if args.quick else 10_000
    results = {
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "cost_model": vars(cost),
        "quick": args.quick,
        "cases": {},
    }
    cases = []
    t = time.perf_counter()
    a = mptrj_like(n_a)
    cases += [("a_mptrj_like", a, 64), ("a_mptrj_like", a, 8)]
    b = ase_mixed(n_b)
    print(f"built (b) in {time.perf_counter() - t:.1f} s", flush=True)
    cases += [("b_ase_mixed", b, 8), ("b_ase_mixed", b, 16)]
    c = aspirin()
    cases += [("c_rmd17_aspirin", c, 4), ("c_rmd17_aspirin", c, 8)]
    for name, (nodes, edges), d in cases:
        rows = compare(nodes, edges, d, cost)
        key = f"{name}_d{d}"
        results["cases"][key] = {
            "num_graphs": int(nodes.size),
            "num_devices": d,
            "nodes_mean": float(nodes.mean()),
            "nodes_max": int(nodes.max()),
            "edges_mean": float(edges.mean()),
            "edges_max": int(edges.max()),
            "rows": rows,
        }
        print(
            f"\n### {key}: {nodes.size} graphs, {d} devices, nodes mean {nodes.mean():.1f} "
            f"max {nodes.max()}, edges mean {edges.mean():.0f} max {edges.max()}"
        )
        print(table(rows), flush=True)
    # The MACE reference setting: 16 graphs per device on 64 devices.
    ref = baselines.fixed_count(*a, 64, 16, cost=cost)
    results["a_fixed_count_16_per_device"] = ref.summary()
    ref16 = ref.summary()
    print(
        f"\nfixed count, 16 graphs/device, 64 devices: mean max/mean "
        f"{ref16['mean_max_over_mean']:.2f}, worst {ref16['worst_max_over_mean']:.2f}"
    )
    for n, d in [(50_000, 64)] if args.quick else [(2_600_000, 64), (2_600_000, 740)]:
        r = planning_time(n, d)
        results.setdefault("planning_time", []).append(r)
        print(
            f"planning {n} graphs on {d} devices: first epoch {r['first_epoch_seconds']:.2f} s "
            f"wall / {r['first_epoch_cpu_seconds']:.2f} s CPU (capacities + packing), next epoch "
            f"{r['next_epoch_seconds']:.2f} s / {r['next_epoch_cpu_seconds']:.2f} s CPU, "
            f"waste cost {100 * r['waste']['cost']:.2f}%, worst max/mean "
            f"{r['worst_max_over_mean']:.4f}",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "balance_results_quick.json" if args.quick else "balance_results.json"
    (out / name).write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
