"""`EpochPlan`: one epoch of device batches with static capacities, and its statistics."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .cost import CostModel

__all__ = ["EpochPlan", "assemble_plan"]


@dataclass
class EpochPlan:
    """One epoch: ``steps[s][d]`` is the int64 array of graph indices device ``d`` takes in step
    ``s``. Every batch fits the static padded shapes ``(node_capacity, edge_capacity,
    graph_capacity)`` *including* the reserved padding slots (``reserve``: nodes, edges, graphs
    that a padded batch keeps free for its dummy padding graph), so one compiled step serves the
    whole epoch.

    Statistics (definitions):

    - ``waste[dim]``, padded-compute waste along ``dim`` in ``nodes | edges | graphs``:
      ``1 - (real count summed over all graphs) / (num_steps * num_devices * capacity)``: the
      fraction of the padded arrays that carries no data. ``waste["cost"]`` is the same with the
      cost model's load: ``1 - sum(load of graphs) / (num_steps * num_devices * load(capacities))``:
      the fraction of predicted padded compute that is wasted.
    - ``step_max_over_mean[s]``: in step ``s``, the largest predicted load of a device batch over
      the mean over devices (1 = perfect). The load is the cost model's variable part
      (``per_node * nodes + per_edge * edges + per_graph * graphs``); the fixed ``per_batch``
      term is excluded because it would pull every ratio toward 1. With fixed capacities every
      device runs the same padded shapes; this ratio is then what the devices would take if run
      unpadded, and its excess over 1 is the part of the waste caused by imbalance.
    """

    indices: np.ndarray  # [num_graphs] graph indices, batch after batch (step-major)
    offsets: np.ndarray  # [num_steps * num_devices + 1] batch b is indices[offsets[b]:offsets[b+1]]
    node_capacity: int
    edge_capacity: int
    graph_capacity: int
    loads: np.ndarray  # [num_steps, num_devices, 3] real (nodes, edges, graphs) per batch
    cost: CostModel
    reserve: tuple[int, int, int] = (1, 0, 1)
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    planning_seconds: float = 0.0
    method: str = "balanced"

    @property
    def num_steps(self) -> int:
        return int(self.loads.shape[0])

    def batch(self, step: int, device: int) -> np.ndarray:
        """Graph indices of device ``device`` in step ``step``."""
        b = step * self.num_devices + device
        return self.indices[self.offsets[b] : self.offsets[b + 1]]

    @functools.cached_property
    def steps(self) -> list[list[np.ndarray]]:
        """``steps[s][d]``: graph indices of device ``d`` in step ``s`` (views into indices)."""
        batches = np.split(self.indices, self.offsets[1:-1])
        d = self.num_devices
        return [batches[s * d : (s + 1) * d] for s in range(self.num_steps)]

    @property
    def num_devices(self) -> int:
        return int(self.loads.shape[1])

    @property
    def capacities(self) -> tuple[int, int, int]:
        """``(node_capacity, edge_capacity, graph_capacity)``."""
        return (self.node_capacity, self.edge_capacity, self.graph_capacity)

    @property
    def device_load(self) -> np.ndarray:
        """``[num_steps, num_devices]`` predicted variable load of each batch."""
        return self.cost.load(self.loads[..., 0], self.loads[..., 1], self.loads[..., 2])

    @property
    def waste(self) -> dict[str, float]:
        bins = self.num_steps * self.num_devices
        if bins == 0:
            return {"nodes": 0.0, "edges": 0.0, "graphs": 0.0, "cost": 0.0}
        real = self.loads.reshape(-1, 3).sum(axis=0)
        caps = np.array(self.capacities, dtype=np.float64)
        out = {
            name: float(1.0 - real[i] / (bins * caps[i])) if caps[i] > 0 else 0.0
            for i, name in enumerate(("nodes", "edges", "graphs"))
        }
        cap_load = float(self.cost.load(*caps))
        out["cost"] = float(1.0 - self.device_load.sum() / (bins * cap_load)) if cap_load else 0.0
        return out

    @property
    def step_max_over_mean(self) -> np.ndarray:
        """``[num_steps]`` max over devices / mean over devices of the predicted load."""
        load = self.device_load
        mean = load.mean(axis=1)
        return np.where(mean > 0, load.max(axis=1) / np.where(mean > 0, mean, 1.0), 1.0)

    def summary(self) -> dict:
        """JSON-friendly statistics."""
        ratio = self.step_max_over_mean
        return {
            "method": self.method,
            "num_graphs": int(self.loads[..., 2].sum()),
            "num_devices": self.num_devices,
            "num_steps": self.num_steps,
            "capacities": {
                "nodes": self.node_capacity,
                "edges": self.edge_capacity,
                "graphs": self.graph_capacity,
            },
            "waste": self.waste,
            "mean_max_over_mean": float(ratio.mean()) if ratio.size else 1.0,
            "worst_max_over_mean": float(ratio.max()) if ratio.size else 1.0,
            "dropped": int(self.dropped.size),
            "planning_seconds": self.planning_seconds,
        }

    def check(self, num_nodes, num_edges) -> None:
        """Raise ValueError unless every graph not dropped appears exactly once and every batch
        fits the capacities (minus the reserve)."""
        num_nodes = np.asarray(num_nodes)
        num_edges = np.asarray(num_edges)
        seen = np.zeros(num_nodes.shape[0], dtype=np.int64)
        limits = np.array(self.capacities) - np.array(self.reserve)
        num_batches = self.num_steps * self.num_devices
        if self.offsets.shape != (num_batches + 1,) or self.offsets[-1] != self.indices.size:
            raise ValueError("offsets do not cut indices into num_steps * num_devices batches")
        np.add.at(seen, self.indices, 1)
        counts = np.diff(self.offsets)
        owner = np.repeat(np.arange(num_batches), counts)
        size = np.stack(
            [
                np.bincount(owner, weights=num_nodes[self.indices], minlength=num_batches),
                np.bincount(owner, weights=num_edges[self.indices], minlength=num_batches),
                counts,
            ],
            axis=1,
        )
        if not np.array_equal(size, self.loads.reshape(-1, 3)):
            raise ValueError("loads do not match the batches")
        over = np.flatnonzero(np.any(size > limits, axis=1))
        if over.size:
            s, d = divmod(int(over[0]), self.num_devices)
            raise ValueError(f"batch (step {s}, device {d}) holds {size[over[0]]} > {limits}")
        expected = np.ones_like(seen)
        expected[self.dropped] = 0
        if not np.array_equal(seen, expected):
            bad = np.flatnonzero(seen != expected)
            raise ValueError(f"{bad.size} graphs are not used exactly once, e.g. index {bad[0]}")


def assemble_plan(
    batches: Sequence[np.ndarray],
    num_devices: int,
    num_nodes: np.ndarray,
    num_edges: np.ndarray,
    capacities: tuple[int, int, int],
    cost: CostModel,
    *,
    reserve: tuple[int, int, int] = (1, 0, 1),
    dropped: np.ndarray | None = None,
    method: str = "balanced",
) -> EpochPlan:
    """Deal ``batches`` (in order) to devices ``num_devices`` at a time; a short last step is
    completed with empty batches. ``capacities=(0, 0, 0)`` means: the smallest that fit."""
    batches = [np.asarray(b, dtype=np.int64) for b in batches]
    num_steps = -(-len(batches) // num_devices)
    empty = np.zeros(0, dtype=np.int64)
    batches = batches + [empty] * (num_steps * num_devices - len(batches))
    loads = np.array(
        [(num_nodes[b].sum(), num_edges[b].sum(), b.size) for b in batches], dtype=np.int64
    ).reshape(num_steps, num_devices, 3)
    caps = tuple(
        int(c) if c > 0 else int(loads[..., i].max(initial=0)) + reserve[i]
        for i, c in enumerate(capacities)
    )
    offsets = np.concatenate([[0], np.cumsum([b.size for b in batches])]).astype(np.int64)
    return EpochPlan(
        indices=np.concatenate(batches) if batches else np.zeros(0, np.int64),
        offsets=offsets,
        node_capacity=caps[0],
        edge_capacity=caps[1],
        graph_capacity=caps[2],
        loads=loads,
        cost=cost,
        reserve=tuple(reserve),
        dropped=np.zeros(0, dtype=np.int64) if dropped is None else np.asarray(dropped, np.int64),
        method=method,
    )
