"""MACE training benchmark on rMD17 aspirin: wall time, throughput, learning curve, test MAEs.

    python bench/bench_mace_train.py --config examples/configs/mace_aspirin_gpu.yaml \
        [--set section.key=value ...] [--out bench/results]

Writes ``<out>/mace_train_<device>.json`` (device name, jax version, config, wall times, steps
per second, the validation learning curve and the final validation/test MAEs and RMSEs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _device_tag(kind: str) -> str:
    m = re.search(r"(h100|h200|a100|b200|gb200|l40s?)", kind.lower())
    return m.group(1) if m else re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "cpu"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="bench/results")
    p.add_argument("--tag", default=None, help="file suffix (default: the device name)")
    args = p.parse_args(argv)

    import jax

    from jax_mace.train import load_config
    from jax_mace.train.loop import train

    t0 = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    device = jax.devices()[0]
    kind = device.device_kind if device.platform != "cpu" else platform.processor() or "cpu"
    print(f"device: {device.platform} {kind}; jax {jax.__version__}", flush=True)
    results = train(cfg)
    wall = time.perf_counter() - t0
    curve = [
        {
            "epoch": h["epoch"],
            "elapsed_s": h["elapsed_s"],
            **{k: round(v, 3) for k, v in h.get("valid", {}).items()},
            **{f"test_{k}": round(v, 3) for k, v in h.get("test", {}).items()},
        }
        for h in results["history"]
    ]
    steady = [h["steps_per_s"] for h in results["history"][1:]]
    report = {
        "benchmark": "mace_train_rmd17_aspirin",
        "device": kind if device.platform != "cpu" else f"cpu ({os.cpu_count()} cores)",
        "platform": device.platform,
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "wall_s": round(wall, 1),
        "train_wall_s": results["train_wall_s"],
        "stop_reason": results["stop_reason"],
        "epochs": results["epochs"],
        "steps": results["steps"],
        "steady_steps_per_s": round(sorted(steady)[len(steady) // 2], 2) if steady else None,
        "num_params": results["num_params"],
        "num_train": results["num_train"],
        "num_valid": results["num_valid"],
        "num_test": results["num_test"],
        "valid": results.get("valid"),
        "test": results.get("test"),
        "test_eval_s": results.get("test_eval_s"),
        "learning_curve": curve,
        "model_config": results["model_config"],
        "train_config": results["train_config"],
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"mace_train_{args.tag or _device_tag(kind)}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: report[k] for k in ("device", "wall_s", "epochs", "test")}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
