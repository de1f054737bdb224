"""The distribution schemes the balanced planner is measured against (same `EpochPlan` output).

Capacities of a baseline plan are the smallest static shapes holding all its batches (plus the
reserve), unless given: the most favourable choice for the baseline, which in practice would
either recompile per shape or pad to a bound chosen before seeing the epoch.
"""

from __future__ import annotations

import time

import numpy as np

from .cost import CostModel
from .plan import EpochPlan, assemble_plan

__all__ = ["fixed_count", "greedy_stream", "lpt_per_step"]


def _shuffled(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, 1]).permutation(n)


def _check(num_nodes, num_edges, num_devices) -> tuple[np.ndarray, np.ndarray]:
    nodes = np.asarray(num_nodes, dtype=np.int64)
    edges = np.asarray(num_edges, dtype=np.int64)
    if nodes.ndim != 1 or nodes.shape != edges.shape:
        raise ValueError("num_nodes and num_edges must be 1-D arrays of the same length")
    if int(num_devices) != num_devices or num_devices < 1:
        raise ValueError(f"num_devices must be a positive integer, got {num_devices}")
    return nodes, edges


def fixed_count(
    num_nodes,
    num_edges,
    num_devices: int,
    graphs_per_device: int,
    *,
    cost: CostModel | None = None,
    reserve: tuple[int, int, int] = (1, 0, 1),
    seed: int = 0,
    epoch: int = 0,
) -> EpochPlan:
    """What MACE does: shuffle, then every device takes ``graphs_per_device`` graphs per step
    (the last step shares out what is left, so every graph is used once)."""
    t0 = time.perf_counter()
    nodes, edges = _check(num_nodes, num_edges, num_devices)
    if int(graphs_per_device) != graphs_per_device or graphs_per_device < 1:
        raise ValueError(f"graphs_per_device must be a positive integer, got {graphs_per_device}")
    order = _shuffled(nodes.size, seed, epoch)
    full = (nodes.size // (num_devices * graphs_per_device)) * num_devices * graphs_per_device
    batches = np.split(order[:full], full // graphs_per_device) if full else []
    batches += np.array_split(order[full:], num_devices) if full < nodes.size else []
    plan = assemble_plan(
        batches,
        num_devices,
        nodes,
        edges,
        (0, 0, 0),
        cost or CostModel(),
        reserve=reserve,
        method="fixed_count",
    )
    plan.planning_seconds = time.perf_counter() - t0
    return plan


def greedy_stream(
    num_nodes,
    num_edges,
    num_devices: int,
    capacities: tuple[int, int, int],
    *,
    cost: CostModel | None = None,
    reserve: tuple[int, int, int] = (1, 0, 1),
    seed: int = 0,
    epoch: int = 0,
) -> EpochPlan:
    """jraph ``dynamically_batch``-style: stream the shuffled graphs, close a batch when the next
    graph would overflow ``capacities`` (minus the reserve), deal batches to devices in turn; the
    last step is completed with empty batches."""
    t0 = time.perf_counter()
    nodes, edges = _check(num_nodes, num_edges, num_devices)
    limits = np.array(capacities, dtype=np.int64) - np.array(reserve)
    order = _shuffled(nodes.size, seed, epoch)
    n_seq, e_seq = nodes[order], edges[order]
    if np.any(n_seq > limits[0]) or np.any(e_seq > limits[1]) or limits[2] < 1:
        raise ValueError("capacities must fit every single graph (after the reserve)")
    cuts = [0]
    pos, n = 0, order.size
    cum_n = np.concatenate([[0], np.cumsum(n_seq)])
    cum_e = np.concatenate([[0], np.cumsum(e_seq)])
    while pos < n:  # the longest prefix from pos that fits, by binary search on the prefix sums
        end_n = np.searchsorted(cum_n, cum_n[pos] + limits[0], side="right") - 1
        end_e = np.searchsorted(cum_e, cum_e[pos] + limits[1], side="right") - 1
        end = min(end_n, end_e, pos + limits[2], n)
        pos = max(end, pos + 1)
        cuts.append(pos)
    batches = [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    plan = assemble_plan(
        batches,
        num_devices,
        nodes,
        edges,
        tuple(capacities),
        cost or CostModel(),
        reserve=reserve,
        method="greedy_stream",
    )
    plan.planning_seconds = time.perf_counter() - t0
    return plan


def lpt_per_step(
    num_nodes,
    num_edges,
    num_devices: int,
    graphs_per_device: int,
    *,
    cost: CostModel | None = None,
    reserve: tuple[int, int, int] = (1, 0, 1),
    seed: int = 0,
    epoch: int = 0,
) -> EpochPlan:
    """fairchem ``BalancedBatchSampler``-style: shuffle, cut global batches of ``num_devices *
    graphs_per_device`` graphs, and inside each assign graphs largest-first to the device with
    the least predicted load so far (LPT). Vectorised over steps."""
    t0 = time.perf_counter()
    nodes, edges = _check(num_nodes, num_edges, num_devices)
    if int(graphs_per_device) != graphs_per_device or graphs_per_device < 1:
        raise ValueError(f"graphs_per_device must be a positive integer, got {graphs_per_device}")
    cost = cost or CostModel()
    d, g = int(num_devices), int(graphs_per_device)
    order = _shuffled(nodes.size, seed, epoch)
    per_step = d * g
    steps = -(-order.size // per_step)
    padded = np.full(steps * per_step, -1, dtype=np.int64)  # -1: no graph (last step)
    padded[: order.size] = order
    grid = padded.reshape(steps, per_step)
    load_of = np.where(grid >= 0, cost.load(nodes[grid], edges[grid], 1.0), -1.0)
    rank = np.argsort(-load_of, axis=1, kind="stable")
    grid = np.take_along_axis(grid, rank, axis=1)
    load_of = np.take_along_axis(load_of, rank, axis=1)
    device_load = np.zeros((steps, d))
    owner = np.empty((steps, per_step), dtype=np.int64)
    rows = np.arange(steps)
    for k in range(per_step):
        target = np.argmin(device_load, axis=1)
        owner[:, k] = target
        device_load[rows, target] += np.maximum(load_of[:, k], 0.0)
    batches = []
    for s in range(steps):
        valid = grid[s] >= 0
        for dev in range(d):
            batches.append(grid[s][valid & (owner[s] == dev)])
    plan = assemble_plan(
        batches, d, nodes, edges, (0, 0, 0), cost, reserve=reserve, method="lpt_per_step"
    )
    plan.planning_seconds = time.perf_counter() - t0
    return plan
