"""Dataset statistics a MACE model is built with: E0s, average neighbours, energy shift/scale."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jax_mace.data.graph import Graph


@dataclasses.dataclass(frozen=True)
class DatasetStatistics:
    """Computed once on the training set and saved with the model.

    Attributes:
        e0s: per-species reference energy (eV), ordered like the element table.
        avg_num_neighbors: mean number of edges per node (divides the message sum).
        shift: mean interaction energy per atom (eV), ``(E - sum E0) / n`` averaged over graphs.
        scale: energy scale (eV): RMS force component if forces exist, else std of the shifted
            per-atom energy; the model multiplies its interaction energies by it.
    """

    e0s: tuple[float, ...]
    avg_num_neighbors: float
    shift: float
    scale: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"e0s": list(self.e0s)}

    @classmethod
    def from_dict(cls, d: dict) -> DatasetStatistics:
        return cls(
            e0s=tuple(float(e) for e in d["e0s"]),
            avg_num_neighbors=float(d["avg_num_neighbors"]),
            shift=float(d["shift"]),
            scale=float(d["scale"]),
        )


def _counts(graphs: Sequence[Graph], num_species: int) -> np.ndarray:
    return np.stack([np.bincount(g.species, minlength=num_species) for g in graphs]).astype(float)


def compute_e0s(
    graphs: Sequence[Graph], num_species: int, method: str = "least_squares"
) -> np.ndarray:
    """Reference energy per species ``[num_species]`` (eV) from graphs with energies.

    ``least_squares`` solves ``counts @ e0 = E`` (minimum-norm where the composition does not
    determine every element, e.g. a single molecule's isomers); ``average`` gives every species
    the mean energy per atom.
    """
    labelled = [g for g in graphs if g.energy is not None]
    if not labelled:
        raise ValueError("compute_e0s: no graph carries an energy label")
    energies = np.array([g.energy for g in labelled])
    counts = _counts(labelled, num_species)
    if method == "least_squares":
        e0s, *_ = np.linalg.lstsq(counts, energies, rcond=None)
        return e0s
    if method == "average":
        return np.full(num_species, energies.sum() / counts.sum())
    raise ValueError(f"compute_e0s: method must be 'least_squares' or 'average', got {method!r}")


def average_num_neighbors(graphs: Sequence[Graph]) -> float:
    """Edges per node over the whole set."""
    nodes = sum(g.num_nodes for g in graphs)
    if nodes == 0:
        raise ValueError("average_num_neighbors: no nodes")
    return sum(g.num_edges for g in graphs) / nodes


def compute_statistics(
    graphs: Sequence[Graph],
    num_species: int,
    e0s: Sequence[float] | str = "least_squares",
) -> DatasetStatistics:
    """E0s (given, or computed with the named method), neighbours, shift and scale."""
    if isinstance(e0s, str):
        e0 = compute_e0s(graphs, num_species, e0s)
    else:
        e0 = np.asarray(e0s, np.float64)
        if e0.shape != (num_species,):
            raise ValueError(f"e0s must have {num_species} entries, got {e0.shape}")
    labelled = [g for g in graphs if g.energy is not None]
    per_atom = np.array(
        [(g.energy - e0[g.species].sum()) / g.num_nodes for g in labelled], dtype=np.float64
    )
    shift = float(per_atom.mean()) if per_atom.size else 0.0
    forces = [g.forces for g in graphs if g.forces is not None]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    else:
        scale = float(per_atom.std()) if per_atom.size > 1 else 1.0
    if not np.isfinite(scale) or scale < 1e-8:
        scale = 1.0
    return DatasetStatistics(
        e0s=tuple(float(x) for x in e0),
        avg_num_neighbors=float(average_num_neighbors(graphs)),
        shift=shift,
        scale=scale,
    )
