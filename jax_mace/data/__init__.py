"""Data pipeline: reading structures (ASE), neighbour lists (matscipy), padded graph batches
and dataset statistics."""

from jax_mace.data.batching import BatchCapacity, capacity_for, iterate_batches
from jax_mace.data.build import (
    DEFAULT_MIN_DISTANCE,
    configuration_to_graph,
    configurations_to_graphs,
    element_table,
    species_index,
)
from jax_mace.data.graph import Graph, GraphBatch, graph_sizes, pad_graphs
from jax_mace.data.io import (
    Configuration,
    KeySpec,
    atoms_to_configuration,
    read_configurations,
)
from jax_mace.data.neighbors import neighbour_edges
from jax_mace.data.statistics import (
    DatasetStatistics,
    average_num_neighbors,
    compute_e0s,
    compute_statistics,
)

__all__ = [
    "DEFAULT_MIN_DISTANCE",
    "BatchCapacity",
    "Configuration",
    "DatasetStatistics",
    "Graph",
    "GraphBatch",
    "KeySpec",
    "atoms_to_configuration",
    "average_num_neighbors",
    "capacity_for",
    "compute_e0s",
    "compute_statistics",
    "configuration_to_graph",
    "configurations_to_graphs",
    "element_table",
    "graph_sizes",
    "iterate_batches",
    "neighbour_edges",
    "pad_graphs",
    "read_configurations",
    "species_index",
]
