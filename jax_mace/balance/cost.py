"""Cost model of one device batch, and a least-squares fit of it from measured step times."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["CostModel", "fit_cost_model"]


@dataclass(frozen=True)
class CostModel:
    """Predicted time of one device batch: ``per_node * nodes + per_edge * edges +
    per_graph * graphs + per_batch``.

    Units are arbitrary (seconds when fitted by :func:`fit_cost_model`). ``per_batch`` is a fixed
    overhead that every device pays once per step whatever its batch holds (launches, the
    optimizer, the all-reduce). It is left out of the *load* used for balance statistics: adding
    the same constant to every device only makes ``max / mean`` look closer to 1. ``per_graph``
    is a real, content-dependent cost (per-structure readouts, stress) and counts in the load.

    The default weights an edge at 0.1 of a node: with MACE at about 44 neighbours per atom the
    edge terms (radial MLP, tensor product, scatter) then carry about 80% of the work, as they do
    once the symmetric contraction runs as a fused kernel.
    """

    per_node: float = 1.0
    per_edge: float = 0.1
    per_graph: float = 0.0
    per_batch: float = 0.0

    def __post_init__(self) -> None:
        for name in ("per_node", "per_edge", "per_graph", "per_batch"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CostModel.{name} must be finite and >= 0, got {value}")
        if self.per_node == 0 and self.per_edge == 0 and self.per_graph == 0:
            raise ValueError("CostModel needs per_node, per_edge or per_graph > 0")

    @property
    def weights(self) -> np.ndarray:
        """``[3]`` weights of (nodes, edges, graphs) in the variable load."""
        return np.array([self.per_node, self.per_edge, self.per_graph], dtype=np.float64)

    def load(self, nodes, edges, graphs) -> np.ndarray:
        """Variable (content-dependent) load, without ``per_batch``. Broadcasts over arrays."""
        return (
            self.per_node * np.asarray(nodes, dtype=np.float64)
            + self.per_edge * np.asarray(edges, dtype=np.float64)
            + self.per_graph * np.asarray(graphs, dtype=np.float64)
        )

    def time(self, nodes, edges, graphs) -> np.ndarray:
        """Predicted step time of a batch: the load plus ``per_batch``."""
        return self.load(nodes, edges, graphs) + self.per_batch


def _nonnegative_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact non-negative least squares for a handful of columns: best over all active sets."""
    best, best_res = np.zeros(a.shape[1]), float(np.sum(y**2))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            sol, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
            if np.any(sol < 0):
                continue
            res = float(np.sum((a[:, cols] @ sol - y) ** 2))
            if res < best_res - 1e-15 * max(best_res, 1.0):
                best, best_res = np.zeros(a.shape[1]), res
                best[list(cols)] = sol
    return best


def fit_cost_model(nodes, edges, graphs, times, *, fit_intercept: bool = True) -> CostModel:
    """Fit :class:`CostModel` coefficients to measured step times by non-negative least squares.

    Args:
      nodes, edges, graphs: ``[M]`` real (unpadded) counts of M measured batches.
      times: ``[M]`` measured times of those batches (any unit; the model takes that unit).
      fit_intercept: also fit ``per_batch`` (a fixed cost per step); otherwise it is 0.

    Every coefficient is constrained to be >= 0. Measure batches of varied composition (few large
    vs many small graphs), or the node, edge and graph columns are collinear and the split
    between them is arbitrary. With padded (static-shape) execution the time depends on the
    capacities rather than the real counts: fit on unpadded runs, or on runs of several
    capacities.
    """
    cols = {"nodes": nodes, "edges": edges, "graphs": graphs, "times": times}
    arrays = {}
    for name, value in cols.items():
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and >= 0")
        arrays[name] = arr
    m = arrays["times"].shape[0]
    if any(a.shape[0] != m for a in arrays.values()):
        raise ValueError("nodes, edges, graphs and times must have the same length")
    need = 4 if fit_intercept else 3
    if m < need:
        raise ValueError(f"times needs at least {need} measurements, got {m}")
    columns = [arrays["nodes"], arrays["edges"], arrays["graphs"]]
    if fit_intercept:
        columns.append(np.ones(m))
    a = np.stack(columns, axis=1)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-300)  # conditioning: nodes and edges differ ~50x
    sol = _nonnegative_lstsq(a / scale, arrays["times"]) / scale
    if sol[0] == 0 and sol[1] == 0 and sol[2] == 0:
        raise ValueError("times do not grow with nodes, edges or graphs: cannot fit a load model")
    return CostModel(
        per_node=float(sol[0]),
        per_edge=float(sol[1]),
        per_graph=float(sol[2]),
        per_batch=float(sol[3]) if fit_intercept else 0.0,
    )
