"""Graphs of atomic structures: one host-side :class:`Graph` per structure, and the padded
:class:`GraphBatch` with static shapes ``(n_node, n_edge, n_graph)`` that jitted code consumes.

Edge convention (as in MACE): an edge ``s -> r`` carries the vector from the sender to the
receiver, ``vec = positions[r] - positions[s] + unit_shifts @ cell`` (Angstrom), where
``unit_shifts`` are the integer periodic-image shifts of the sender's image.

Padding: nodes past the real ones belong to graph ``n_graph - 1`` and have ``node_mask`` False;
padding edges join node ``n_node - 1`` to itself with a zero shift and ``edge_mask`` False;
padding graphs have ``graph_mask`` False. Models must ignore masked entries (MACE replaces masked
edge vectors by a dummy before any non-linearity and multiplies node energies by ``node_mask``),
so padding never changes energies, forces, losses or metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@dataclasses.dataclass(frozen=True)
class Graph:
    """One structure on the host (NumPy), ready to be padded into a :class:`GraphBatch`.

    Attributes:
        positions: ``[n, 3]`` Cartesian positions (A).
        species: ``[n]`` int32 index of each atom's element in the model's element table.
        senders, receivers: ``[e]`` int32 edge endpoints (directed; both directions present).
        unit_shifts: ``[e, 3]`` integer-valued periodic-image shifts of the sender.
        cell: ``[3, 3]`` lattice vectors as rows (A); zeros when not periodic.
        pbc: ``[3]`` bool periodicity per lattice vector.
        energy: total energy (eV) or None.
        forces: ``[n, 3]`` (eV/A) or None.
        stress: ``[3, 3]`` (eV/A^3, ASE sign convention) or None.
        label: where the structure came from (``"file.xyz, frame 12"``), used in error messages.
    """

    positions: np.ndarray
    species: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    unit_shifts: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    label: str = ""

    @property
    def num_nodes(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.senders.shape[0])


@struct.dataclass
class GraphBatch:
    """Padded batch of graphs (a pytree of arrays; all shapes static).

    Shapes: ``positions [n_node, 3]``, ``species [n_node]`` int32, ``node_graph [n_node]`` int32
    (graph index of each node), ``senders/receivers [n_edge]`` int32, ``unit_shifts [n_edge, 3]``,
    ``cell [n_graph, 3, 3]``, ``num_nodes [n_graph]`` int32 (real atoms per graph), masks
    ``node_mask [n_node]``, ``edge_mask [n_edge]``, ``graph_mask [n_graph]`` (bool), labels
    ``energy [n_graph]`` (eV), ``forces [n_node, 3]`` (eV/A), ``stress [n_graph, 3, 3]``
    (eV/A^3) and their masks ``energy_mask [n_graph]``, ``forces_mask [n_node]``,
    ``stress_mask [n_graph]`` (True where the label exists and the entry is real).
    """

    positions: jax.Array
    species: jax.Array
    node_graph: jax.Array
    senders: jax.Array
    receivers: jax.Array
    unit_shifts: jax.Array
    cell: jax.Array
    num_nodes: jax.Array
    node_mask: jax.Array
    edge_mask: jax.Array
    graph_mask: jax.Array
    energy: jax.Array
    forces: jax.Array
    stress: jax.Array
    energy_mask: jax.Array
    forces_mask: jax.Array
    stress_mask: jax.Array

    @property
    def n_node(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_edge(self) -> int:
        return int(self.senders.shape[0])

    @property
    def n_graph(self) -> int:
        return int(self.cell.shape[0])

    def edge_shifts(self, cell: jax.Array | None = None) -> jax.Array:
        """``[n_edge, 3]`` Cartesian shift vectors ``unit_shifts @ cell`` of each edge's graph.

        ``cell`` (``[n_graph, 3, 3]``) overrides the batch's cell, e.g. a strained one.
        """
        cell = self.cell if cell is None else cell
        edge_cell = cell[self.node_graph[self.senders]]
        return jnp.einsum("ei,eij->ej", self.unit_shifts.astype(cell.dtype), edge_cell)


def graph_sizes(graphs: Sequence[Graph]) -> tuple[np.ndarray, np.ndarray]:
    """``(num_nodes [G], num_edges [G])`` int64 of each graph, e.g. for a batch planner."""
    nodes = np.array([g.num_nodes for g in graphs], dtype=np.int64)
    edges = np.array([g.num_edges for g in graphs], dtype=np.int64)
    return nodes, edges


def pad_graphs(
    graphs: Sequence[Graph], n_node: int, n_edge: int, n_graph: int, dtype=np.float32
) -> GraphBatch:
    """Pack ``graphs`` into one :class:`GraphBatch` of static shape ``(n_node, n_edge, n_graph)``.

    Capacities may be met exactly (no padding node or graph is required). Raises ``ValueError``
    naming the capacity that is exceeded. ``dtype`` is the float type of positions and labels.
    Returns NumPy arrays (convert with ``jax.device_put`` or pass straight to a jitted function).
    """
    for name, value in (("n_node", n_node), ("n_edge", n_edge), ("n_graph", n_graph)):
        if int(value) != value or value < 1:
            raise ValueError(f"pad_graphs: {name} must be a positive integer, got {value!r}")
    nodes, edges = graph_sizes(graphs)
    for name, used, cap in (
        ("n_graph", len(graphs), n_graph),
        ("n_node", int(nodes.sum()), n_node),
        ("n_edge", int(edges.sum()), n_edge),
    ):
        if used > cap:
            raise ValueError(
                f"pad_graphs: {len(graphs)} graphs need {name} >= {used}, capacity is {cap}"
            )

    f = np.dtype(dtype)
    positions = np.zeros((n_node, 3), f)
    species = np.zeros(n_node, np.int32)
    node_graph = np.full(n_node, n_graph - 1, np.int32)
    senders = np.full(n_edge, n_node - 1, np.int32)
    receivers = np.full(n_edge, n_node - 1, np.int32)
    unit_shifts = np.zeros((n_edge, 3), f)
    cell = np.zeros((n_graph, 3, 3), f)
    num_nodes = np.zeros(n_graph, np.int32)
    node_mask = np.zeros(n_node, bool)
    edge_mask = np.zeros(n_edge, bool)
    graph_mask = np.zeros(n_graph, bool)
    energy = np.zeros(n_graph, f)
    forces = np.zeros((n_node, 3), f)
    stress = np.zeros((n_graph, 3, 3), f)
    energy_mask = np.zeros(n_graph, bool)
    forces_mask = np.zeros(n_node, bool)
    stress_mask = np.zeros(n_graph, bool)

    n0 = e0 = 0
    for gi, g in enumerate(graphs):
        n1, e1 = n0 + g.num_nodes, e0 + g.num_edges
        positions[n0:n1] = g.positions
        species[n0:n1] = g.species
        node_graph[n0:n1] = gi
        senders[e0:e1] = g.senders + n0
        receivers[e0:e1] = g.receivers + n0
        unit_shifts[e0:e1] = g.unit_shifts
        cell[gi] = g.cell
        num_nodes[gi] = g.num_nodes
        node_mask[n0:n1] = True
        edge_mask[e0:e1] = True
        graph_mask[gi] = True
        if g.energy is not None:
            energy[gi] = g.energy
            energy_mask[gi] = True
        if g.forces is not None:
            forces[n0:n1] = g.forces
            forces_mask[n0:n1] = True
        if g.stress is not None:
            stress[gi] = g.stress
            stress_mask[gi] = True
        n0, e0 = n1, e1

    return GraphBatch(
        positions=positions,
        species=species,
        node_graph=node_graph,
        senders=senders,
        receivers=receivers,
        unit_shifts=unit_shifts,
        cell=cell,
        num_nodes=num_nodes,
        node_mask=node_mask,
        edge_mask=edge_mask,
        graph_mask=graph_mask,
        energy=energy,
        forces=forces,
        stress=stress,
        energy_mask=energy_mask,
        forces_mask=forces_mask,
        stress_mask=stress_mask,
    )
