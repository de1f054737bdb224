"""Learning-rate schedules evaluated on the host (the rate enters the jitted step as an input)."""

from __future__ import annotations

import dataclasses
import math

from jax_mace.train.config import OptimConfig

SCHEDULES = ("constant", "cosine", "exponential", "plateau")


@dataclasses.dataclass
class PlateauState:
    """Reduce-on-plateau bookkeeping (saved in checkpoints)."""

    best: float = math.inf
    bad_evals: int = 0
    factor: float = 1.0

    def update(self, metric: float, cfg: OptimConfig) -> None:
        if metric < self.best * (1 - 1e-4):
            self.best, self.bad_evals = metric, 0
        else:
            self.bad_evals += 1
            if self.bad_evals > cfg.plateau_patience:
                self.factor *= cfg.plateau_factor
                self.bad_evals = 0


def learning_rate(cfg: OptimConfig, step: int, progress: float, plateau: PlateauState) -> float:
    """Rate at ``step`` given training ``progress`` in [0, 1] (epochs, steps or time)."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"training.schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
    lr = cfg.lr
    if cfg.stage_two_fraction is not None and progress >= cfg.stage_two_fraction:
        lr = cfg.stage_two_lr if cfg.stage_two_lr is not None else lr
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        floor = cfg.min_lr_factor
        lr *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    elif cfg.schedule == "exponential":
        lr *= cfg.min_lr_factor**p
    elif cfg.schedule == "plateau":
        lr *= plateau.factor
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr


def loss_weights(cfg: OptimConfig, progress: float) -> dict[str, float]:
    """Energy/forces/stress weights (stage two switches them for the last part of training)."""
    if cfg.stage_two_fraction is not None and progress >= cfg.stage_two_fraction:
        return {
            "energy": cfg.stage_two_energy_weight,
            "forces": cfg.stage_two_forces_weight,
            "stress": cfg.stress_weight,
        }
    return {"energy": cfg.energy_weight, "forces": cfg.forces_weight, "stress": cfg.stress_weight}
