"""Configurations -> graphs: element table lookup, neighbour list, sanity checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.data import chemical_symbols

from jax_mace.data.graph import Graph
from jax_mace.data.io import Configuration
from jax_mace.data.neighbors import neighbour_edges

DEFAULT_MIN_DISTANCE = 0.1  # A; closer atoms are almost surely a unit or parsing error


def element_table(configs: Sequence[Configuration]) -> tuple[int, ...]:
    """Sorted atomic numbers present in ``configs``."""
    zs = set()
    for c in configs:
        zs.update(int(z) for z in np.unique(c.atomic_numbers))
    return tuple(sorted(zs))


def species_index(atomic_numbers: np.ndarray, z_table: Sequence[int], where: str) -> np.ndarray:
    """Index of each atomic number in ``z_table``; ``ValueError`` naming unknown elements."""
    lookup = {int(z): i for i, z in enumerate(z_table)}
    unknown = sorted({int(z) for z in atomic_numbers} - lookup.keys())
    if unknown:
        names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in z_table)
        raise ValueError(f"{where}: unknown element(s) {names}; the model knows {known}")
    return np.array([lookup[int(z)] for z in atomic_numbers], dtype=np.int32)


def configuration_to_graph(
    config: Configuration,
    z_table: Sequence[int],
    r_max: float,
    min_distance: float = DEFAULT_MIN_DISTANCE,
) -> Graph:
    """Build the radius graph of one configuration (see :mod:`jax_mace.data.graph`)."""
    where = config.label or "structure"
    species = species_index(config.atomic_numbers, z_table, where)
    senders, receivers, shifts, lengths = neighbour_edges(
        config.positions, config.cell, config.pbc, r_max
    )
    if lengths.size and lengths.min() < min_distance:
        k = int(np.argmin(lengths))
        raise ValueError(
            f"{where}: atoms {senders[k]} and {receivers[k]} are {lengths[k]:.4f} A apart, "
            f"closer than the tolerance {min_distance} A"
        )
    return Graph(
        positions=config.positions,
        species=species,
        senders=senders,
        receivers=receivers,
        unit_shifts=shifts,
        cell=config.cell,
        pbc=config.pbc,
        energy=config.energy,
        forces=config.forces,
        stress=config.stress,
        label=config.label,
    )


def configurations_to_graphs(
    configs: Sequence[Configuration],
    z_table: Sequence[int],
    r_max: float,
    min_distance: float = DEFAULT_MIN_DISTANCE,
) -> list[Graph]:
    """:func:`configuration_to_graph` over a list."""
    return [configuration_to_graph(c, z_table, r_max, min_distance) for c in configs]
