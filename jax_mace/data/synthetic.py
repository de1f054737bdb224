"""Random non-periodic structures for benchmarks and tests (no physics: random labels)."""

from __future__ import annotations

import numpy as np

from jax_mace.data.graph import Graph


def random_cluster(
    rng: np.random.Generator,
    atoms: int,
    side: float,
    min_distance: float,
    r_max: float,
    num_species: int,
) -> Graph:
    """``atoms`` atoms placed uniformly in a cube of edge ``side`` (Angstrom), rejecting any
    closer than ``min_distance`` to a placed one; edges between every pair closer than
    ``r_max``; random species in ``[0, num_species)``, energy and forces."""
    pos = []
    while len(pos) < atoms:
        p = rng.uniform(0.0, side, 3)
        if all(np.linalg.norm(p - q) > min_distance for q in pos):
            pos.append(p)
    pos = np.asarray(pos, np.float32)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    snd, rcv = np.nonzero((dist < r_max) & (dist > 0))
    return Graph(
        positions=pos,
        species=rng.integers(0, num_species, atoms).astype(np.int32),
        senders=snd.astype(np.int32),
        receivers=rcv.astype(np.int32),
        unit_shifts=np.zeros((snd.size, 3), np.float32),
        cell=np.zeros((3, 3), np.float32),
        pbc=np.zeros(3, bool),
        energy=float(rng.normal()),
        forces=rng.normal(size=(atoms, 3)).astype(np.float32),
    )
