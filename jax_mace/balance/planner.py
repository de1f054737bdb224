"""The balanced planner: capacities, bin count, and one packed epoch per call."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .cost import CostModel
from .packing import bin_loads, repair, water_fill
from .plan import EpochPlan

__all__ = ["MemoryBudget", "EpochPlanner", "plan_epoch"]

_MAX_RETRIES = 12


@dataclass(frozen=True)
class MemoryBudget:
    """Device memory one padded batch may take: ``per_node * node_capacity + per_edge *
    edge_capacity + per_graph * graph_capacity <= total`` (bytes, or any one unit)."""

    total: float
    per_node: float
    per_edge: float
    per_graph: float = 0.0

    def __post_init__(self) -> None:
        for name in ("total", "per_node", "per_edge", "per_graph"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"MemoryBudget.{name} must be finite and >= 0, got {value}")
        if self.total <= 0 or (self.per_node == 0 and self.per_edge == 0):
            raise ValueError("MemoryBudget needs total > 0 and per_node or per_edge > 0")


def _as_counts(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-graph counts, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer counts")
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0")
    return arr


def _positive_or_none(name: str, value) -> int | None:
    if value is None:
        return None
    if int(value) != value or value <= 0:
        raise ValueError(f"{name} must be a positive integer or None, got {value}")
    return int(value)


class EpochPlanner:
    """Plans balanced epochs over a fixed data set; capacities are fixed at construction, so every
    epoch's plan has the same padded shapes (one compilation for the whole run).

    Args:
      num_nodes, num_edges: ``[N]`` per-graph node and (directed) edge counts.
      num_devices: devices taking one batch each per step (all hosts together).
      max_nodes, max_edges, max_graphs: padded capacities (array sizes, reserve included); a given
        one is used as is, a missing one is chosen from the data.
      memory: a :class:`MemoryBudget`; sets the node and edge capacities not given, in the data's
        node/edge proportion.
      cost: the :class:`CostModel` to balance (default ``CostModel()``).
      slack: headroom of automatic capacities over the mean batch (0.005 = 0.5%).
      graph_slack: headroom of an automatic graph capacity over the fullest batch when the cost
        model does not charge per graph (graph slots are then cheap); else ``slack`` is used.
      reserve: ``(nodes, edges, graphs)`` each padded batch keeps free for padding; the default
        ``(1, 0, 1)`` leaves one dummy graph with one dummy node to own the padding.
      oversize: policy for a graph that fits no capacity: ``"error"`` (ValueError) or ``"drop"``
        (left out of every epoch, listed in ``EpochPlan.dropped``).
      min_graphs_per_batch: automatic capacities hold at least this many mean graphs.
      largest_fraction: automatic capacities make the largest graph at most this fraction of the
        mean batch (each of nodes, edges), so that large graphs can be balanced by small ones.
      jitter: relative noise on the packing order (per epoch randomness).
      seed: base seed; ``plan(epoch)`` uses ``(seed, epoch)``.

    Automatic capacities: the number of batches ``B`` (a multiple of ``num_devices``) is the
    largest meeting ``min_graphs_per_batch`` and ``largest_fraction``; the packing of epoch 0
    gives the fullest batch, and the capacity is ``max(fullest, mean * (1 + slack))`` plus
    the reserve (no slack along a dimension in which all graphs are equal). For near-uniform
    sizes (coefficient of variation of the cost < 0.1) ``B`` is moved (by at most -25%) to make
    ``N / B`` whole, as the graph count then sets the padding.
    """

    def __init__(
        self,
        num_nodes,
        num_edges,
        num_devices: int,
        *,
        max_nodes: int | None = None,
        max_edges: int | None = None,
        max_graphs: int | None = None,
        memory: MemoryBudget | None = None,
        cost: CostModel | None = None,
        slack: float = 0.005,
        graph_slack: float = 0.1,
        reserve: tuple[int, int, int] = (1, 0, 1),
        oversize: str = "error",
        min_graphs_per_batch: int = 8,
        largest_fraction: float = 2.0 / 3.0,
        jitter: float = 0.05,
        seed: int = 0,
    ) -> None:
        t0 = time.perf_counter()
        nodes = _as_counts("num_nodes", num_nodes)
        edges = _as_counts("num_edges", num_edges)
        if nodes.shape != edges.shape:
            raise ValueError(
                f"num_nodes and num_edges must have the same length, got {nodes.size} and "
                f"{edges.size}"
            )
        if int(num_devices) != num_devices or num_devices < 1:
            raise ValueError(f"num_devices must be a positive integer, got {num_devices}")
        caps_given = [
            _positive_or_none("max_nodes", max_nodes),
            _positive_or_none("max_edges", max_edges),
            _positive_or_none("max_graphs", max_graphs),
        ]
        if len(reserve) != 3 or any(int(r) != r or r < 0 for r in reserve):
            raise ValueError(f"reserve must be three integers >= 0, got {reserve}")
        if oversize not in ("error", "drop"):
            raise ValueError(f"oversize must be 'error' or 'drop', got {oversize!r}")
        if not 0 <= slack < 1:
            raise ValueError(f"slack must be in [0, 1), got {slack}")
        if not 0 <= graph_slack < 10:
            raise ValueError(f"graph_slack must be in [0, 10), got {graph_slack}")
        if not 0 < largest_fraction <= 1:
            raise ValueError(f"largest_fraction must be in (0, 1], got {largest_fraction}")
        if int(min_graphs_per_batch) != min_graphs_per_batch or min_graphs_per_batch < 1:
            raise ValueError(
                f"min_graphs_per_batch must be an integer >= 1, got {min_graphs_per_batch}"
            )
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.num_devices = int(num_devices)
        self.cost = CostModel() if cost is None else cost
        self.reserve = tuple(int(r) for r in reserve)
        self.slack, self.graph_slack, self.jitter, self.seed = slack, graph_slack, jitter, seed
        self._min_graphs, self._largest_fraction = int(min_graphs_per_batch), largest_fraction
        if memory is not None:
            caps_given = self._caps_from_memory(memory, nodes, edges, caps_given)
        for i, name in enumerate(("max_nodes", "max_edges", "max_graphs")):
            if caps_given[i] is not None and caps_given[i] <= self.reserve[i] and i != 1:
                raise ValueError(f"{name}={caps_given[i]} leaves no room after reserve {reserve}")

        sizes = np.stack([nodes, edges, np.ones_like(nodes)], axis=1)
        limits_given = np.array(
            [np.inf if c is None else c - r for c, r in zip(caps_given, self.reserve, strict=True)]
        )
        too_big = np.flatnonzero(np.any(sizes > limits_given, axis=1))
        if too_big.size and oversize == "error":
            i = too_big[np.argmax(sizes[too_big, 1])]
            raise ValueError(
                f"{too_big.size} graphs exceed the capacities (max_nodes={caps_given[0]}, "
                f"max_edges={caps_given[1]}, max_graphs={caps_given[2]}, reserve {self.reserve}), "
                f"e.g. graph {i} with {sizes[i, 0]} nodes and {sizes[i, 1]} edges; raise the "
                "capacities or pass oversize='drop'"
            )
        self.dropped = too_big
        keep = np.ones(nodes.size, dtype=bool)
        keep[too_big] = False
        self.index = np.flatnonzero(keep)  # plan positions -> original graph indices
        self.sizes = sizes[keep].astype(np.float64)
        n = self.sizes.shape[0]
        if n < self.num_devices:
            raise ValueError(
                f"num_nodes has {n} usable graphs, fewer than num_devices={self.num_devices}"
            )
        self.totals = self.sizes.sum(axis=0)
        self._choose_bins_and_caps(caps_given)
        self.setup_seconds = time.perf_counter() - t0

    # ----------------------------------------------------------------------------- capacities
    def _caps_from_memory(self, memory, nodes, edges, caps):
        """Largest node/edge capacities in the data's proportion that fit ``memory``."""
        n_per_g = max(nodes.mean(), 1e-9)
        e_per_g = edges.mean()
        g_cap = caps[2]
        fixed = memory.per_graph * (g_cap if g_cap is not None else 0)
        per_graph_eq = memory.per_node * n_per_g + memory.per_edge * e_per_g
        if g_cap is None:
            per_graph_eq += memory.per_graph * (1 + self.graph_slack)
        g = (memory.total - fixed) / max(per_graph_eq, 1e-300)
        out = list(caps)
        if out[0] is None:
            out[0] = int(np.floor(g * n_per_g)) if memory.per_node > 0 else None
        if out[1] is None:
            out[1] = int(np.floor(g * e_per_g)) if memory.per_edge > 0 else None
        if out[0] is not None and out[0] <= self.reserve[0]:
            raise ValueError(f"memory={memory} leaves no room for even one node per batch")
        return out

    def _choose_bins_and_caps(self, caps_given) -> None:
        d, n = self.num_devices, self.sizes.shape[0]
        reserve = np.array(self.reserve, dtype=np.float64)
        given = np.array([c is not None for c in caps_given])
        limits = np.array(
            [c - r if c is not None else np.inf for c, r in zip(caps_given, reserve, strict=True)]
        )
        # Fewest batches the given capacities allow.
        with np.errstate(divide="ignore"):
            need = np.where(given, self.totals / limits, 0.0)
        bins_min = d * max(1, int(np.ceil(need.max() / d - 1e-9)))
        if given.any():
            self.num_bins = bins_min  # batches as large as the given capacities allow
        else:
            # Automatic: batches large enough for the largest graph and min_graphs_per_batch.
            per_graph = self.totals / n
            largest = self.sizes.max(axis=0)
            g0 = max(
                float(self._min_graphs),
                *(
                    largest[i] / (self._largest_fraction * per_graph[i])
                    for i in (0, 1)
                    if per_graph[i] > 0
                ),
            )
            bins_auto = d * max(1, int(np.floor(n / (g0 * d))))
            self.num_bins = bins_auto
            if self._near_uniform():
                self.num_bins = self._whole_graphs_per_bin(bins_auto, d)
        # Capacities: given ones as is, the others from a reference packing.
        caps = np.array([c if c is not None else 0 for c in caps_given], dtype=np.int64)
        self._epoch0 = None
        if not given.all():
            # Epoch 0's packing is the reference: its capacities fit it without repair.
            rng = self._rng(0)
            ref, ref_loads = self._pack(self.num_bins, rng, limits=None)
            self._epoch0 = (ref, ref_loads, rng.bit_generator.state)
            fullest = ref_loads.max(axis=0)
            mean = self.totals / self.num_bins
            # Headroom lets other epochs' packings fit without repair; a dimension in which all
            # graphs are alike packs the same every epoch and needs none.
            varies = np.ptp(self.sizes, axis=0) > 0
            auto = np.maximum(fullest, np.round(mean * (1 + self.slack * varies)))
            # Graph slots: cheap unless the cost model charges per graph.
            g_slack = self.graph_slack if self.cost.per_graph == 0 else self.slack
            auto[2] = max(fullest[2], np.round(max(fullest[2], mean[2]) * (1 + g_slack)))
            # At least 1 per dimension: arrays of size 0 are not useful batches.
            caps = np.where(given, caps, np.maximum(auto + reserve, 1).astype(np.int64))
        self.capacities = tuple(int(c) for c in caps)
        self.limits = np.array(self.capacities, dtype=np.float64) - reserve
        if self._epoch0 is not None:
            fits, _ = repair(
                self._epoch0[0], self.sizes, self.limits, self.num_bins, loads=self._epoch0[1]
            )
            if not fits:
                self._epoch0 = None  # given capacities it cannot meet: epoch 0 packs afresh

    def _near_uniform(self) -> bool:
        load = self.cost.load(self.sizes[:, 0], self.sizes[:, 1], self.sizes[:, 2])
        return bool(load.std() < 0.1 * max(load.mean(), 1e-300))

    def _whole_graphs_per_bin(self, bins: int, bins_min: int) -> int:
        """Among multiples of num_devices in [0.75 * bins, bins], the one whose ``ceil(N / B)``
        wastes the fewest graph slots (ties: the most bins)."""
        d, n = self.num_devices, self.sizes.shape[0]
        lo = max(bins_min, d * max(1, int(np.ceil(0.75 * bins / d))))
        cands = np.arange(bins, lo - 1, -d)
        if cands.size == 0:
            return bins
        waste = 1.0 - n / (cands * np.ceil(n / cands))
        return int(cands[np.argmin(waste + 1e-12 * np.arange(cands.size))])

    # ------------------------------------------------------------------------------- packing
    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([int(self.seed) & 0xFFFFFFFF, int(epoch)])

    def _pack(self, num_bins: int, rng: np.random.Generator, limits):
        """(assign [N], loads [B, 3]) of a packing into ``num_bins`` bins (repaired to fit
        ``limits`` when given), or None if it cannot be made to fit."""
        mean = np.maximum(self.totals / num_bins, 1e-300)
        w = self.cost.weights * mean
        w = w / w.sum()
        # Nodes and edges are balanced, each against its capacity. The graph count is not: equal
        # counts would fight the node and edge balance (a batch holding a big graph needs fewer
        # others); it only shapes the graph capacity, and per-graph cost still counts in the load
        # that groups batches into steps. A cost model charging only per graph packs by count.
        cols = [0, 1] if w[0] + w[1] > 0 else [2]
        norm = self.sizes[:, cols] / mean[cols]
        key = w[cols] / w[cols].sum()
        match = np.ones(len(cols))
        assign = water_fill(norm, num_bins, key, rng, jitter=self.jitter, match_weights=match)
        loads = bin_loads(assign, self.sizes, num_bins)
        if limits is not None:
            fits, loads = repair(assign, self.sizes, limits, num_bins, loads=loads)
            if not fits:
                return None
        return assign, loads

    def plan(self, epoch: int = 0) -> EpochPlan:
        """The plan of one epoch (a different, reproducible packing and order per epoch)."""
        if int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch}")
        t0 = time.perf_counter()
        rng = self._rng(epoch)
        num_bins = self.num_bins
        for attempt in range(_MAX_RETRIES):
            if epoch == 0 and attempt == 0 and self._epoch0 is not None:
                packed = (self._epoch0[0].copy(), self._epoch0[1].copy())
                rng.bit_generator.state = self._epoch0[2]
            else:
                packed = self._pack(num_bins, rng, self.limits)
            if packed is not None:
                break
            # More, hence emptier, batches: +0.1%, +0.2%, +0.4%, ... (at least one step).
            grow = 0.001 * 2**attempt * num_bins / self.num_devices
            num_bins += self.num_devices * max(1, int(np.ceil(grow)))
        else:
            raise ValueError(
                "could not pack the graphs into the capacities "
                f"{self.capacities}; raise max_nodes/max_edges/max_graphs"
            )
        plan = self._to_plan(*packed, num_bins, rng)
        plan.planning_seconds = time.perf_counter() - t0 + (self.setup_seconds if epoch == 0 else 0)
        return plan

    def _to_plan(self, assign, loads, num_bins: int, rng: np.random.Generator) -> EpochPlan:
        d = self.num_devices
        load = self.cost.load(loads[:, 0], loads[:, 1], loads[:, 2])
        # Batches of similar load share a step (balance), steps run in random order (dynamics).
        by_load = np.argsort(load, kind="stable").reshape(-1, d)
        by_load = by_load[rng.permutation(by_load.shape[0])]
        by_load = rng.permuted(by_load, axis=1)
        slot = np.empty(num_bins, dtype=np.int64)
        slot[by_load.ravel()] = np.arange(num_bins)
        item_slot = slot[assign]
        order = _group_by(item_slot)
        counts = np.bincount(item_slot, minlength=num_bins)
        return EpochPlan(
            indices=self.index[order],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            node_capacity=self.capacities[0],
            edge_capacity=self.capacities[1],
            graph_capacity=self.capacities[2],
            loads=np.rint(loads[by_load.ravel()]).astype(np.int64).reshape(-1, d, 3),
            cost=self.cost,
            reserve=self.reserve,
            dropped=self.dropped,
            method="balanced",
        )


def _group_by(key: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative int ``key`` < 2**32 by two 16-bit radix passes."""
    order = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    if key.size and key.max() > 0xFFFF:
        order = order[np.argsort((key[order] >> 16).astype(np.uint16), kind="stable")]
    return order


def plan_epoch(
    num_nodes,
    num_edges,
    num_devices: int,
    *,
    max_nodes: int | None = None,
    max_edges: int | None = None,
    max_graphs: int | None = None,
    cost: CostModel | None = None,
    seed: int = 0,
    epoch: int = 0,
    **kwargs,
) -> EpochPlan:
    """Plan one balanced epoch; see :class:`EpochPlanner` for the arguments (``kwargs``).

    Every graph is used exactly once (or dropped by ``oversize='drop'``); every step has one
    batch per device; all batches fit ``plan.capacities``; batches are balanced in the cost
    model's predicted load; ``(seed, epoch)`` fixes the packing and the step order. For many
    epochs build an :class:`EpochPlanner` once and call ``plan(epoch)``: the capacities (hence
    the compiled shapes) then stay fixed, and the setup is not repeated.
    """
    planner = EpochPlanner(
        num_nodes,
        num_edges,
        num_devices,
        max_nodes=max_nodes,
        max_edges=max_edges,
        max_graphs=max_graphs,
        cost=cost,
        seed=seed,
        **kwargs,
    )
    return planner.plan(epoch)
