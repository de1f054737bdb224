"""Training configuration: YAML sections ``data``, ``model``, ``training``, ``output``.

Unknown keys are errors naming the file, the section and the key. Relative data paths are
relative to the working directory (run the CLI from the repository root).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml

from jax_mace.model.config import PRESETS, MACEConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the structures come from and how they are split."""

    train_file: str = ""
    test_file: str | None = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    split_pool: int | None = 1000  # take train/valid from the first frames of train_file
    num_train: int = 950
    num_valid: int = 50
    split_seed: int = 0
    num_test: int | None = None  # None = every test frame
    e0s: str = "least_squares"  # or "average"
    min_distance: float = 0.1


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimisation: batches, optimizer, schedule, EMA, loss weights, budgets."""

    batch_size: int = 5
    eval_batch_size: int = 25
    max_epochs: int = 100
    max_steps: int | None = None
    time_budget_s: float | None = None
    optimizer: str = "amsgrad"  # or "adam"
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    schedule: str = "plateau"  # constant | cosine | exponential | plateau
    warmup_steps: int = 0
    min_lr_factor: float = 0.01  # cosine floor; exponential: factor reached at the end
    plateau_factor: float = 0.8
    plateau_patience: int = 5  # evaluations without improvement
    ema_decay: float | None = 0.99
    clip_norm: float | None = 10.0
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    stage_two_fraction: float | None = None  # switch weights/lr for the last part of training
    stage_two_energy_weight: float = 1000.0
    stage_two_forces_weight: float = 100.0
    stage_two_lr: float | None = 1e-3
    eval_every: int = 1  # epochs
    test_every: int | None = None  # epochs; None = only at the end
    seed: int = 0
    matmul_precision: str | None = "highest"


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Run directory layout: checkpoints, the final model and the results JSON."""

    dir: str = "runs/mace"
    checkpoints: bool = True
    checkpoint_every: int = 1  # epochs
    keep_checkpoints: int = 2
    progress_bar: bool = True
    # Stop (as if interrupted) after this many epochs of this invocation; the schedule still
    # follows training.max_epochs, so a --resume continues exactly.
    stop_after_epochs: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    model: dict[str, Any]
    training: OptimConfig
    output: OutputConfig
    source: str = "<dict>"

    def model_config(self, atomic_numbers, statistics) -> MACEConfig:
        """MACE hyperparameters (preset + overrides) completed by the dataset statistics."""
        fields = dict(self.model)
        name = fields.pop("preset", None)
        base = dict(PRESETS[name]) if name else {}
        if name and name not in PRESETS:
            raise ValueError(f"{self.source}: model.preset {name!r} unknown ({sorted(PRESETS)})")
        base.update(fields)
        base.update(
            atomic_numbers=tuple(atomic_numbers),
            avg_num_neighbors=statistics.avg_num_neighbors,
            e0s=statistics.e0s,
            scale=statistics.scale,
            shift=statistics.shift,
        )
        return MACEConfig(**base)

    def to_dict(self) -> dict:
        return {
            "data": dataclasses.asdict(self.data),
            "model": dict(self.model),
            "training": dataclasses.asdict(self.training),
            "output": dataclasses.asdict(self.output),
        }


_MODEL_KEYS = {f.name for f in dataclasses.fields(MACEConfig)} - {
    "atomic_numbers",
    "avg_num_neighbors",
    "e0s",
    "scale",
    "shift",
} | {"preset"}


def _section(cls, values: dict | None, name: str, source: str):
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} in section {name!r}")
    return cls(**values)


def config_from_dict(d: dict, source: str = "<dict>", base_dir: str | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig`; data paths are made absolute relative to ``base_dir``."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected a mapping with sections data/model/training/output")
    unknown = sorted(set(d) - {"data", "model", "training", "output"})
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}")
    data = _section(DataConfig, d.get("data"), "data", source)
    if not data.train_file:
        raise ValueError(f"{source}: data.train_file is required")
    if base_dir is not None:
        fix = {}
        for key in ("train_file", "test_file"):
            path = getattr(data, key)
            if path and not os.path.isabs(path):
                fix[key] = os.path.normpath(os.path.join(base_dir, path))
        data = dataclasses.replace(data, **fix)
    model = dict(d.get("model") or {})
    bad = sorted(set(model) - _MODEL_KEYS)
    if bad:
        raise ValueError(f"{source}: unknown key(s) {bad} in section 'model'")
    if "radial_mlp" in model:
        model["radial_mlp"] = tuple(model["radial_mlp"])
    training = _section(OptimConfig, d.get("training"), "training", source)
    output = _section(OutputConfig, d.get("output"), "output", source)
    return TrainConfig(data=data, model=model, training=training, output=output, source=source)


def _parse_value(text: str):
    return yaml.safe_load(text)


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """``["training.lr=0.005", "model.hidden_irreps=32x0e"]`` applied to a nested dict copy."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        section, field = key.split(".", 1)
        out.setdefault(section, {})
        out[section] = dict(out[section] or {})
        out[section][field] = _parse_value(value)
    return out


def load_config(path: str, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config file (plus ``section.key=value`` overrides)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such config file")
    with open(path) as f:
        try:
            d = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML ({err})") from err
    if overrides:
        d = apply_overrides(d, overrides)
    return config_from_dict(d, source=path)
