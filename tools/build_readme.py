"""Assembles README.md from docs/*.md sections and the measured results in bench/results/*.json.

The performance tables are generated from the JSON files only (what a benchmark measured), so
the README never quotes a number nobody measured. Run after a benchmark lands:

    python tools/build_readme.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

HEADER = """\
```bash
pip install -e . && python examples/gna_quickstart.py
pip install -e ".[test]" && python -m pytest -n 2 -q
```

The first command runs the main demo (GNA on an image-sized 2-D grid: the simulator's bound,
the attention call, an exact output check); the second installs the test extras and runs the
test suite on the CPU (GPU tests are skipped without a GPU). Both work on a fresh machine with
Python 3.11 or 3.12.

# jax-gna-mace

JAX libraries for two kinds of sparse, locality-driven computation:

1. **Generalized Neighborhood Attention (GNA)** (`jax_gna`, `simulator`): sliding-window,
   strided and blocked attention over 1-D/2-D/3-D token grids with NATTEN's exact semantics, a
   memory-efficient pure-JAX implementation, Flax layers, a fused CUDA kernel for Hopper, and a
   NumPy simulator of the speedup a tiled kernel can reach.
2. **MACE** (`jax_mace`): the equivariant interatomic potential in Flax, with a symmetric tensor
   contraction written as a sparse polynomial (pure JAX and a fused CUDA kernel) and a balancer
   that packs molecular graphs into equal-work, statically shaped per-device batches.

Every kernel has a pure-JAX twin (the CPU path, the fallback, and the test oracle);
`jax_gna.cuda_status()` and `jax_mace.cuda_status()` say whether the CUDA extension is usable.
"""

SECTIONS = [
    "gna_api.md",
    "simulator.md",
    "gna_cuda.md",
    "mace.md",
    "symcon_cuda.md",
    "balance.md",
    "building.md",
]


def _load(pattern: str) -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(RESULTS.glob(pattern))]


def _fmt(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _percent(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def balance_table() -> list[str]:
    lines = []
    for name, data in _load("balance_results.json"):
        lines += [
            f"Balancer (`{name}`, CPU planning; cost model {data.get('cost_model')}):",
            "",
            "| case | method | steps | cost waste | mean max/mean | worst max/mean | plan s |",
            "|---|---|---|---|---|---|---|",
        ]
        for case, block in data["cases"].items():
            for row in block["rows"]:
                lines.append(
                    f"| {case} | {row['method']} | {row['num_steps']} | "
                    f"{100 * row['waste']['cost']:.1f}% | {_fmt(row['mean_max_over_mean'], 4)} | "
                    f"{_fmt(row['worst_max_over_mean'], 4)} | {_fmt(row['planning_seconds'])} |"
                )
        lines.append("")
    return lines


def multigpu_table() -> list[str]:
    lines = []
    for name, data in _load("multigpu_*.json"):
        lines += [
            f"Multi-GPU MACE training (`{name}`: {data.get('device_kind')}, jax "
            f"{data.get('jax')}, {data.get('hidden_irreps')}, {data.get('num_graphs')} graphs):",
            "",
            "| GPUs | batching | step ms (median) | graphs/s | vs fixed count | scaling eff. |",
            "|---|---|---|---|---|---|",
        ]
        for run in data["runs"]:
            lines.append(
                f"| {run['num_devices']} | {run['method']} | "
                f"{1e3 * run['step_time_median_s']:.1f} | {run['graphs_per_s']:.0f} | "
                f"{_fmt(run.get('speedup_vs_fixed_count'))} | "
                f"{_fmt(run.get('scaling_efficiency'))} |"
            )
        lines.append("")
    return lines


def simulator_table() -> list[str]:
    lines = []
    for name, data in _load("simulator_*.json"):
        lines += [
            f"Simulator speed (`{name}`, {data['machine'].get('cpu')}):",
            "",
            "| case | median s | target s | speedup bound |",
            "|---|---|---|---|",
        ]
        for row in data["results"]:
            lines.append(
                f"| {row['case']} | {row['median_s']:.4f} | {_fmt(row.get('target_s'), 1)} | "
                f"{_fmt(row.get('speedup_bound'))} |"
            )
        lines.append("")
    return lines


def gna_reference_table() -> list[str]:
    rows = _load("gna_reference_*.json")
    if not rows:
        return []
    lines = [
        "Pure-JAX GNA reference, 3-D grid 16x64x64, 16 heads x 64, bf16, window 3x7x7 "
        "(`bench/bench_gna_reference.py`; dense fp32 scores would need 275 GB):",
        "",
        "| device | jax | forward s | fwd+bwd s | temp memory fwd / fwd+bwd GiB |",
        "|---|---|---|---|---|",
    ]
    for _, data in rows:
        f, fb = data["results"]["forward"], data["results"]["forward_backward"]
        lines.append(
            f"| {data['device']} | {data['jax']} | {f['median_s']:.3f} | {fb['median_s']:.3f} | "
            f"{f['temp_bytes'] / 2**30:.2f} / {fb['temp_bytes'] / 2**30:.2f} |"
        )
    return lines + [""]


def mace_train_table() -> list[str]:
    rows = _load("mace_train_*.json")
    if not rows:
        return []
    lines = [
        "MACE on rMD17 aspirin (950 train / 50 valid, test on 1800 frames; paper with full "
        "training: 2.2 meV energy, 6.6 meV/A force MAE):",
        "",
        "| file | device | jax | train wall s | epochs | steps/s | test E MAE meV | "
        "test F MAE meV/A |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, data in rows:
        test = data["test"]
        lines.append(
            f"| `{name}` | {data['device']} | {data.get('jax_version')} | "
            f"{data['train_wall_s']:.0f} | {data['epochs']} | "
            f"{_fmt(data.get('steady_steps_per_s'), 1)} | {test['mae_energy_mev']:.2f} | "
            f"{test['mae_forces_mev']:.2f} |"
        )
    return lines + [""]


def symcon_table() -> list[str]:
    lines = []
    for name, data in _load("symcon_NVIDIA*.json"):
        info = data["info"]
        lines += [
            f"Symmetric contraction kernel (`{name}`: {info['gpu']}, jax {info['jax']}, "
            f"{info['dtype']}, cuEquivariance {info.get('cuequivariance')} `uniform_1d` baseline "
            "in the same run; ours = backend `cuda` (kernels specialised per path list), engine = "
            "backend `cuda-engine`; speedup = other time / ours, so < 1 means slower"
            + (f"; {info['note']}" if info.get("note") else "")
            + "):",
            "",
            "| model | N | ours fwd / fwd+bwd ms | cuEq fwd / fwd+bwd ms | vs cuEq | "
            "vs cuEq, device time | vs pure JAX | engine fwd / fwd+bwd ms | % of physical limit |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in data["cases"]:
            ref = (
                f"{_fmt(c.get('speedup_vs_ref_fwd'))} / {_fmt(c.get('speedup_vs_ref_fwdbwd'))}"
                if c.get("speedup_vs_ref_fwd")
                else "-"
            )
            engine = (
                f"{c['engine_fwd']['median_ms']:.3f} / {c['engine_fwdbwd']['median_ms']:.3f}"
                if "engine_fwd" in c
                else "-"
            )
            device = (
                f"{c['speedup_vs_cueq_fwd_device']:.2f} / {c['speedup_vs_cueq_fwdbwd_device']:.2f}"
                if "speedup_vs_cueq_fwd_device" in c
                else "-"
            )
            lines.append(
                f"| {c['model']} | {c['N']} | {c['ours_fwd']['median_ms']:.3f} / "
                f"{c['ours_fwdbwd']['median_ms']:.3f} | {c['cueq_fwd']['median_ms']:.3f} / "
                f"{c['cueq_fwdbwd']['median_ms']:.3f} | {c['speedup_vs_cueq_fwd']:.2f} / "
                f"{c['speedup_vs_cueq_fwdbwd']:.2f} | {device} | {ref} | {engine} | "
                f"{100 * c['limit_fwd']['fraction_reached']:.1f} / "
                f"{100 * c['limit_fwdbwd']['fraction_reached']:.1f} |"
            )
        lines.append("")
    return lines


def gna_kernel_table() -> list[str]:
    lines = []
    for name, data in _load("gna_NVIDIA*.json"):
        meta = data["meta"]
        lines += [
            f"GNA forward kernel (`{name}`: {meta['gpu']}, jax {meta['jax']}, cuDNN "
            f"{meta.get('cudnn')}, {meta['dtype']}, head_dim {meta['head_dim']}, batch "
            f"{meta['batch']}; baseline `jax.nn.dot_product_attention(implementation='cudnn')` "
            "in the same run; times include all layout work of the user-facing call; "
            f"timing: {meta.get('timing', 'median of repeats')}):",
            "",
            "| case | grid | window | stride | heads | GNA ms | cuDNN ms | speedup | simulator "
            "bound | of bound | of mean bound | GNA eff. TFLOP/s | cuDNN TFLOP/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in data["results"]:
            grid = "x".join(map(str, r["grid"]))
            lines.append(
                f"| {r['case']} | {grid} | {'x'.join(map(str, r['window']))} | "
                f"{'x'.join(map(str, r['stride']))} | {r['heads']} | {r['gna_ms']:.2f} | "
                f"{r['cudnn_ms']:.2f} | {r['speedup']:.2f}x | {r['simulator_bound']:.2f}x | "
                f"{100 * r['fraction_of_bound']:.0f}% | "
                f"{_percent(r.get('fraction_of_mean_bound'))} | "
                f"{r['gna_effective_tflops']:.0f} | "
                f"{_fmt(r.get('cudnn_tflops'), 0)} |"
            )
        lines.append("")
    return lines


def main() -> None:
    parts = [HEADER]
    for section in SECTIONS:
        path = ROOT / "docs" / section
        if path.exists():
            parts.append(path.read_text().strip() + "\n")
    perf = (
        gna_kernel_table()
        + gna_reference_table()
        + symcon_table()
        + mace_train_table()
        + simulator_table()
        + balance_table()
        + multigpu_table()
    )
    parts.append(
        "## Performance (generated from bench/results/*.json)\n\n"
        "Every number below was measured by a script in `bench/`; ratios are against a baseline "
        "measured in the same run on the same device.\n\n" + "\n".join(perf)
    )
    (ROOT / "README.md").write_text("\n".join(parts))
    print(f"README.md written ({len(parts)} parts)")


if __name__ == "__main__":
    main()
