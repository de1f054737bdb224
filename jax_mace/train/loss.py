"""Weighted energy/forces/stress loss and error sums for MAE/RMSE (padding-free by masks)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jax_mace.data.graph import GraphBatch

METRIC_KEYS = (
    "energy_abs",
    "energy_sq",
    "energy_per_atom_abs",
    "energy_per_atom_sq",
    "energy_count",
    "forces_abs",
    "forces_sq",
    "forces_count",
    "stress_abs",
    "stress_sq",
    "stress_count",
)


def loss_and_sums(
    pred: dict[str, jax.Array], batch: GraphBatch, weights: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss ``w_E * mean((dE / n)^2) + w_F * mean(dF^2) + w_S * mean(dS^2)`` over real labelled
    entries, and per-batch error sums (eV, eV/A, eV/A^3)."""
    em = batch.energy_mask.astype(pred["energy"].dtype)
    fm = batch.forces_mask.astype(pred["energy"].dtype)[:, None]
    n_atoms = jnp.maximum(batch.num_nodes, 1).astype(em.dtype)
    de = (pred["energy"] - batch.energy) * em
    de_atom = de / n_atoms
    df = (pred["forces"] - batch.forces) * fm
    e_count = jnp.sum(em)
    f_count = 3.0 * jnp.sum(fm)
    loss_e = jnp.sum(de_atom**2) / jnp.maximum(e_count, 1.0)
    loss_f = jnp.sum(df**2) / jnp.maximum(f_count, 1.0)
    loss = weights["energy"] * loss_e + weights["forces"] * loss_f
    sums = {
        "energy_abs": jnp.sum(jnp.abs(de)),
        "energy_sq": jnp.sum(de**2),
        "energy_per_atom_abs": jnp.sum(jnp.abs(de_atom)),
        "energy_per_atom_sq": jnp.sum(de_atom**2),
        "energy_count": e_count,
        "forces_abs": jnp.sum(jnp.abs(df)),
        "forces_sq": jnp.sum(df**2),
        "forces_count": f_count,
        "stress_abs": jnp.zeros(()),
        "stress_sq": jnp.zeros(()),
        "stress_count": jnp.zeros(()),
    }
    if "stress" in pred:
        sm = batch.stress_mask.astype(em.dtype)[:, None, None]
        ds = (pred["stress"] - batch.stress) * sm
        s_count = 9.0 * jnp.sum(sm)
        loss = loss + weights["stress"] * jnp.sum(ds**2) / jnp.maximum(s_count, 1.0)
        sums.update(stress_abs=jnp.sum(jnp.abs(ds)), stress_sq=jnp.sum(ds**2), stress_count=s_count)
    return loss, sums


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """MAE/RMSE in meV, meV/atom, meV/A and meV/A^3 from accumulated error sums."""
    out = {}
    for name, count in (
        ("energy", "energy_count"),
        ("energy_per_atom", "energy_count"),
        ("forces", "forces_count"),
        ("stress", "stress_count"),
    ):
        c = float(sums.get(count, 0.0))
        if c > 0:
            out[f"mae_{name}_mev"] = 1000.0 * float(sums[f"{name}_abs"]) / c
            out[f"rmse_{name}_mev"] = 1000.0 * float(np.sqrt(float(sums[f"{name}_sq"]) / c))
    return out
