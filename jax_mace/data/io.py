"""Reading labelled structures through ASE (extended XYZ and every format ASE reads)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import ase
import ase.io
import numpy as np


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """Where the labels live: ``atoms.info`` / ``atoms.arrays`` keys, else the ASE calculator's
    results under the standard names (ASE moves ``energy``/``forces``/``stress`` there)."""

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One labelled structure (host NumPy). Units: A, eV, eV/A, eV/A^3 (ASE stress sign)."""

    atomic_numbers: np.ndarray  # [n] int
    positions: np.ndarray  # [n, 3]
    cell: np.ndarray  # [3, 3] rows
    pbc: np.ndarray  # [3] bool
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    label: str = ""

    @property
    def num_atoms(self) -> int:
        return int(self.positions.shape[0])


_CALC_NAMES = {"energy": ("energy", "free_energy"), "forces": ("forces",), "stress": ("stress",)}


def _lookup(atoms: ase.Atoms, key: str, kind: str):
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    if key in results:
        return results[key]
    if key == kind:
        for name in _CALC_NAMES[kind]:
            if name in results:
                return results[name]
    return None


def stress_to_matrix(stress, where: str) -> np.ndarray:
    """Voigt ``[6]`` (xx yy zz yz xz xy), ``[9]`` or ``[3, 3]`` stress -> symmetric ``[3, 3]``."""
    s = np.asarray(stress, np.float64)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if s.size == 9:
        return s.reshape(3, 3)
    raise ValueError(f"{where}: stress must have 6 (Voigt) or 9 components, got shape {s.shape}")


def atoms_to_configuration(
    atoms: ase.Atoms, keys: KeySpec = KeySpec(), label: str = ""
) -> Configuration:
    """Extract positions, cell, pbc and the labels named by ``keys`` (missing labels -> None)."""
    where = label or "structure"
    n = len(atoms)
    if n == 0:
        raise ValueError(f"{where}: has no atoms")
    positions = np.asarray(atoms.positions, np.float64)
    if not np.all(np.isfinite(positions)):
        raise ValueError(f"{where}: positions contain non-finite values")
    energy = _lookup(atoms, keys.energy, "energy")
    if energy is not None:
        try:
            energy = float(np.asarray(energy).reshape(()))
        except (TypeError, ValueError) as err:
            msg = f"{where}: energy {keys.energy!r} is not a scalar: {energy!r}"
            raise ValueError(msg) from err
        if not np.isfinite(energy):
            raise ValueError(f"{where}: energy {keys.energy!r} is not finite")
    forces = _lookup(atoms, keys.forces, "forces")
    if forces is not None:
        forces = np.asarray(forces, np.float64)
        if forces.shape != (n, 3):
            raise ValueError(f"{where}: forces {keys.forces!r} must have shape ({n}, 3)")
        if not np.all(np.isfinite(forces)):
            raise ValueError(f"{where}: forces {keys.forces!r} contain non-finite values")
    stress = _lookup(atoms, keys.stress, "stress")
    if stress is not None:
        stress = stress_to_matrix(stress, f"{where}: {keys.stress!r}")
        if not np.all(np.isfinite(stress)):
            raise ValueError(f"{where}: stress {keys.stress!r} contains non-finite values")
    return Configuration(
        atomic_numbers=np.asarray(atoms.numbers, np.int64),
        positions=positions,
        cell=np.asarray(atoms.cell.array, np.float64),
        pbc=np.asarray(atoms.pbc, bool),
        energy=energy,
        forces=forces,
        stress=stress,
        label=label,
    )


def read_configurations(
    path: str | os.PathLike,
    *,
    index: str | int | slice = ":",
    keys: KeySpec = KeySpec(),
    require: Sequence[str] = (),
    format: str | None = None,
) -> list[Configuration]:
    """Read every frame of ``path`` with ASE.

    Args:
        path: any file ASE reads (extended XYZ, ...).
        index: ASE frame selection (default all).
        keys: label key names.
        require: labels every frame must carry, any of ``"energy"``, ``"forces"``, ``"stress"``.
        format: ASE format name (None = guess from the file).

    Raises:
        FileNotFoundError, or ValueError naming the file and frame: malformed file, missing
        required label, wrong label shape, non-finite values.
    """
    path = os.fspath(path)
    for r in require:
        if r not in ("energy", "forces", "stress"):
            raise ValueError(f"require: unknown label {r!r} (use energy, forces, stress)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        frames = ase.io.read(path, index=index, format=format)
    except Exception as err:  # ASE raises many types for malformed input
        raise ValueError(f"{path}: cannot be read by ASE ({type(err).__name__}: {err})") from err
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    if not frames:
        raise ValueError(f"{path}: contains no frames")
    configs = []
    for i, atoms in enumerate(frames):
        label = f"{path}, frame {i}"
        cfg = atoms_to_configuration(atoms, keys, label)
        for r in require:
            if getattr(cfg, r) is None:
                key = getattr(keys, r)
                raise ValueError(f"{label}: missing required label {r!r} (key {key!r})")
        configs.append(cfg)
    return configs
