"""Command line: ``python -m jax_mace.train --config run.yaml [--set section.key=value ...]``."""

from __future__ import annotations

import argparse
import json
import sys

from jax_mace.train.config import load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jax_mace.train",
        description="Train a MACE potential (energies + forces [+ stress]) from a YAML config.",
    )
    p.add_argument("--config", required=True, help="YAML file with data/model/training/output")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config entry (YAML value), e.g. --set training.lr=0.005",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from jax_mace.train.loop import train  # heavy imports after argument checking

    results = train(cfg, resume=args.resume)
    summary = {k: results[k] for k in ("stop_reason", "epochs", "steps", "train_wall_s")}
    for split in ("valid", "test"):
        if split in results:
            summary[split] = results[split]
    print(json.dumps(summary, indent=2))
    return 0
