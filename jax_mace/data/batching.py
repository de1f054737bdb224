"""Fixed-capacity batches for jit: every batch of an epoch has the same padded shape."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from jax_mace.data.graph import Graph, GraphBatch, graph_sizes, pad_graphs


@dataclasses.dataclass(frozen=True)
class BatchCapacity:
    """Static padded shape of a batch."""

    n_node: int
    n_edge: int
    n_graph: int


def capacity_for(graphs: Sequence[Graph], batch_size: int) -> BatchCapacity:
    """Room for any ``batch_size`` graphs of ``graphs`` plus one padding node and graph."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    nodes, edges = graph_sizes(graphs)
    k = min(batch_size, len(graphs))
    top_nodes = int(np.sort(nodes)[-k:].sum())
    top_edges = int(np.sort(edges)[-k:].sum())
    return BatchCapacity(n_node=top_nodes + 1, n_edge=max(top_edges, 1), n_graph=k + 1)


def iterate_batches(
    graphs: Sequence[Graph],
    batch_size: int,
    capacity: BatchCapacity,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> Iterator[GraphBatch]:
    """Yield padded batches of ``batch_size`` graphs (order permuted by ``seed`` if ``shuffle``)."""
    order = np.arange(len(graphs))
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(graphs))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if drop_last and len(idx) < batch_size:
            return
        yield pad_graphs(
            [graphs[i] for i in idx], capacity.n_node, capacity.n_edge, capacity.n_graph
        )
