"""Radial neighbour lists with periodic images (matscipy)."""

from __future__ import annotations

import numpy as np
from matscipy.neighbours import neighbour_list


def _complete_cell(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float):
    """Replace degenerate lattice vectors along non-periodic directions by long orthogonal ones.

    matscipy inverts the cell; a slab or wire may come with zero vectors along its open axes.
    """
    cell = np.array(cell, dtype=np.float64)
    span = float(np.ptp(positions, axis=0).max()) if len(positions) else 0.0
    length = span + 2.0 * r_max + 1.0
    for axis in range(3):
        if pbc[axis] or np.linalg.norm(cell[axis]) > 1e-8:
            continue
        others = [cell[i] for i in range(3) if i != axis and np.linalg.norm(cell[i]) > 1e-8]
        if len(others) == 2:
            direction = np.cross(others[0], others[1])
        elif len(others) == 1:
            trial = np.eye(3)[np.argmin(np.abs(others[0]))]
            direction = np.cross(others[0], trial)
        else:
            direction = np.eye(3)[axis]
        cell[axis] = direction / np.linalg.norm(direction) * length
    return cell


def neighbour_edges(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges ``s -> r`` with ``|positions[r] - positions[s] + S @ cell| < r_max``.

    Args:
        positions: ``[n, 3]`` (A).
        cell: ``[3, 3]`` lattice vectors as rows (A); ignored where ``pbc`` is False.
        pbc: ``[3]`` bool.
        r_max: cutoff radius (A).

    Returns:
        ``senders [e]`` int32, ``receivers [e]`` int32, ``unit_shifts [e, 3]`` float64 (integer
        valued), ``lengths [e]`` float64. Periodic images of an atom itself are included; the atom
        itself (zero shift) is not.
    """
    positions = np.asarray(positions, np.float64)
    pbc = np.asarray(pbc, bool)
    cell = np.zeros((3, 3)) if not pbc.any() else np.asarray(cell, np.float64)
    full = _complete_cell(positions, cell, pbc, r_max)
    if abs(np.linalg.det(full)) < 1e-8:
        raise ValueError(f"cell is singular along a periodic direction: {cell.tolist()}")
    s, r, shifts, d = neighbour_list(
        "ijSd", positions=positions, cell=full, pbc=pbc, cutoff=float(r_max)
    )
    return s.astype(np.int32), r.astype(np.int32), shifts.astype(np.float64), d
