"""ASE calculator for a saved MACE model: energy, free energy, forces and (periodic) stress."""

from __future__ import annotations

import functools
import os

import ase
import jax
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from flax import nnx

from jax_mace.data.build import DEFAULT_MIN_DISTANCE, configuration_to_graph
from jax_mace.data.graph import pad_graphs
from jax_mace.data.io import atoms_to_configuration
from jax_mace.model import MACE, predict
from jax_mace.serialization import load_model


def _bucket(n: int, minimum: int = 8) -> int:
    """Round up to the next power of two times 1 or 1.5, so MD rarely recompiles."""
    size = minimum
    while size < n:
        size = int(size * 1.5) if (size & (size - 1)) == 0 else 2 ** (size.bit_length())
    return size


@functools.lru_cache(maxsize=16)
def _compiled(graphdef):
    """Jitted evaluation shared by all calculators of one model structure."""

    @jax.jit
    def run(params, batch):
        model = nnx.merge(graphdef, params)
        out = predict(model, batch, compute_stress=True, include_e0=False)
        node_e = model.node_energies(batch, include_e0=False)
        return out, node_e

    return run


class MACECalculator(Calculator):
    """ASE calculator around a MACE model.

    Args:
        model: a :class:`~jax_mace.model.MACE` or the directory of a saved model.
        dtype: ``"float32"`` or ``"float64"`` (float64 needs ``jax_enable_x64``).
        min_distance: atoms closer than this (A) raise an error.

    Energies are computed without the reference energies in JAX and ``sum E0`` is added in
    float64 on the host. Stress (ASE convention, eV/A^3) is given for fully periodic cells.
    Padded shapes are rounded up to buckets so that jit compiles rarely during MD.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: MACE | str | os.PathLike,
        dtype: str = "float32",
        min_distance: float = DEFAULT_MIN_DISTANCE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, MACE) else load_model(model)
        self.dtype = np.dtype(dtype)
        if self.dtype == np.float64 and not jax.config.jax_enable_x64:
            raise ValueError("dtype='float64' needs jax.config.update('jax_enable_x64', True)")
        self.min_distance = min_distance
        graphdef, params = nnx.split(self.model)
        self._params = params
        cfg = self.model.config
        self._e0 = np.zeros(cfg.num_species) if cfg.e0s is None else np.asarray(cfg.e0s)
        self._run = _compiled(graphdef)

    def calculate(
        self, atoms: ase.Atoms | None = None, properties=None, system_changes=all_changes
    ):
        super().calculate(atoms, properties or ["energy"], system_changes)
        cfg = self.model.config
        graph = configuration_to_graph(
            atoms_to_configuration(self.atoms, label="ASE atoms"),
            cfg.atomic_numbers,
            cfg.r_max,
            self.min_distance,
        )
        batch = pad_graphs(
            [graph],
            _bucket(graph.num_nodes + 1),
            _bucket(max(graph.num_edges, 1)),
            2,
            dtype=self.dtype,
        )
        out, node_e = jax.device_get(self._run(self._params, batch))
        n = graph.num_nodes
        e0 = self._e0[graph.species]
        energy = float(np.float64(out["energy"][0]) + e0.sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": np.asarray(node_e[:n], np.float64) + e0,
            "forces": np.asarray(out["forces"][:n], np.float64),
        }
        if np.all(self.atoms.pbc):
            s = np.asarray(out["stress"][0], np.float64)
            self.results["stress"] = np.array(
                [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
            )
        elif properties and "stress" in properties:
            raise ValueError("stress needs a cell periodic in all three directions")
