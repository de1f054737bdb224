"""Datasets for training: read, split, build graphs, statistics, E0-relative energy labels."""

from __future__ import annotations

import dataclasses

import numpy as np

from jax_mace.data import (
    DatasetStatistics,
    Graph,
    KeySpec,
    compute_statistics,
    configurations_to_graphs,
    element_table,
    read_configurations,
)
from jax_mace.train.config import DataConfig


@dataclasses.dataclass
class Datasets:
    """Train / validation / test graphs (energies relative to ``sum E0``), the element table and
    the training-set statistics."""

    train: list[Graph]
    valid: list[Graph]
    test: list[Graph]
    z_table: tuple[int, ...]
    statistics: DatasetStatistics
    split: dict


def split_indices(n_frames: int, cfg: DataConfig, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/valid indices drawn from the first ``split_pool`` frames."""
    pool = n_frames if cfg.split_pool is None else cfg.split_pool
    if pool > n_frames:
        raise ValueError(f"{where}: split_pool {pool} exceeds the {n_frames} frames in the file")
    if cfg.num_train + cfg.num_valid > pool:
        raise ValueError(
            f"{where}: num_train + num_valid = {cfg.num_train + cfg.num_valid} exceeds the "
            f"split pool of {pool} frames"
        )
    if cfg.num_train < 1:
        raise ValueError(f"{where}: num_train must be >= 1")
    perm = np.random.default_rng(cfg.split_seed).permutation(pool)
    return perm[: cfg.num_train], perm[cfg.num_train : cfg.num_train + cfg.num_valid]


def relative_energies(graphs: list[Graph], e0s) -> list[Graph]:
    """Subtract ``sum_i E0[z_i]`` from each energy label (float64, before float32 batching)."""
    e0 = np.asarray(e0s, np.float64)
    return [
        g
        if g.energy is None
        else dataclasses.replace(g, energy=float(g.energy - e0[g.species].sum()))
        for g in graphs
    ]


def load_datasets(
    cfg: DataConfig, r_max: float, z_table: tuple[int, ...] | None = None
) -> Datasets:
    """Read the files, split, build graphs with cutoff ``r_max`` and compute statistics."""
    keys = KeySpec(cfg.energy_key, cfg.forces_key, cfg.stress_key)
    configs = read_configurations(cfg.train_file, keys=keys, require=("energy", "forces"))
    tr_idx, va_idx = split_indices(len(configs), cfg, cfg.train_file)
    train_cfgs = [configs[i] for i in tr_idx]
    valid_cfgs = [configs[i] for i in va_idx]
    test_cfgs = []
    if cfg.test_file:
        test_cfgs = read_configurations(cfg.test_file, keys=keys, require=("energy", "forces"))
        if cfg.num_test is not None:
            test_cfgs = test_cfgs[: cfg.num_test]
    z_table = z_table or element_table(train_cfgs)

    def graphs(cs):
        return configurations_to_graphs(cs, z_table, r_max, cfg.min_distance)

    train, valid, test = graphs(train_cfgs), graphs(valid_cfgs), graphs(test_cfgs)
    stats = compute_statistics(train, len(z_table), cfg.e0s)
    return Datasets(
        train=relative_energies(train, stats.e0s),
        valid=relative_energies(valid, stats.e0s),
        test=relative_energies(test, stats.e0s),
        z_table=tuple(z_table),
        statistics=stats,
        split={"train": tr_idx.tolist(), "valid": va_idx.tolist()},
    )
