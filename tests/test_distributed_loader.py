"""PlanLoader: device-stacked padded batches from a plan, built on a background thread."""

import threading

import numpy as np
import pytest

from jax_mace.balance import plan_epoch
from jax_mace.loader import PlanLoader, graph_batch_maker


def sizes(n=400, seed=0):
    rng = np.random.default_rng(seed)
    nodes = rng.integers(1, 40, n)
    return nodes, nodes * rng.integers(5, 30, n)


def toy_maker(nodes, edges, log=None):
    """Padded arrays: graph id per node slot (-1 = padding), and per-graph sizes."""

    def make(idx, caps):
        if log is not None:
            log.append(threading.get_ident())
        n_node, n_edge, n_graph = caps
        owner = np.full(n_node, -1, np.int64)
        owner[: nodes[idx].sum()] = np.repeat(idx, nodes[idx])
        graph_ids = np.full(n_graph, -1, np.int64)
        graph_ids[: idx.size] = idx
        edge_mask = np.zeros(n_edge, bool)
        edge_mask[: edges[idx].sum()] = True
        return {"owner": owner, "graphs": graph_ids, "edge_mask": edge_mask}

    return make


def test_loader_yields_every_graph_once_within_capacity():
    nodes, edges = sizes()
    plan = plan_epoch(nodes, edges, 4)
    log = []
    seen = []
    n_node, n_edge, n_graph = plan.capacities
    with PlanLoader(plan, toy_maker(nodes, edges, log), prefetch=3) as loader:
        assert len(loader) == plan.num_steps
        for step, batch in enumerate(loader):
            assert batch["owner"].shape == (4, n_node)
            assert batch["graphs"].shape == (4, n_graph)
            assert batch["edge_mask"].shape == (4, n_edge)
            for d in range(4):
                assert np.array_equal(
                    np.sort(batch["graphs"][d][batch["graphs"][d] >= 0]),
                    np.sort(plan.batch(step, d)),
                )
                # The reserved padding node is always free.
                assert (batch["owner"][d] < 0).sum() >= plan.reserve[0]
            seen.append(batch["graphs"][batch["graphs"] >= 0])
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(nodes.size))
    assert threading.get_ident() not in log  # built on the worker thread


def test_loader_subset_of_devices_and_put():
    nodes, edges = sizes()
    plan = plan_epoch(nodes, edges, 4)
    loader = PlanLoader(plan, toy_maker(nodes, edges), devices=[1, 3], put=lambda x: ("put", x))
    tag, first = next(iter(loader))
    loader.close()
    assert tag == "put"
    assert first["graphs"].shape[0] == 2
    assert np.array_equal(
        np.sort(first["graphs"][1][first["graphs"][1] >= 0]), np.sort(plan.batch(0, 3))
    )


def test_loader_reraises_errors_and_stops_early():
    nodes, edges = sizes()
    plan = plan_epoch(nodes, edges, 2)

    def broken(idx, caps):
        raise RuntimeError("bad graph")

    with pytest.raises(RuntimeError, match="bad graph"):
        list(PlanLoader(plan, broken))
    loader = PlanLoader(plan, toy_maker(nodes, edges), prefetch=1)
    it = iter(loader)
    next(it)
    loader.close()
    assert loader._thread is None
    assert len(list(loader)) == plan.num_steps  # can iterate again


def test_loader_bad_arguments():
    nodes, edges = sizes()
    plan = plan_epoch(nodes, edges, 2)
    with pytest.raises(ValueError, match="plan must be an EpochPlan"):
        PlanLoader([], toy_maker(nodes, edges))
    with pytest.raises(ValueError, match="make_batch must be callable"):
        PlanLoader(plan, None)
    with pytest.raises(ValueError, match="prefetch must be an integer >= 1"):
        PlanLoader(plan, toy_maker(nodes, edges), prefetch=0)
    with pytest.raises(ValueError, match="devices must be non-empty positions"):
        PlanLoader(plan, toy_maker(nodes, edges), devices=[2])


def test_graph_batch_maker_pads_to_plan_capacities():
    from jax_mace.data import Graph

    rng = np.random.default_rng(0)
    graphs = []
    for n in rng.integers(2, 12, 30):
        pos = rng.normal(0, 2, (n, 3))
        s, r = np.nonzero(~np.eye(n, dtype=bool))
        graphs.append(
            Graph(
                positions=pos,
                species=np.zeros(n, np.int32),
                senders=s.astype(np.int32),
                receivers=r.astype(np.int32),
                unit_shifts=np.zeros((s.size, 3)),
                cell=np.zeros((3, 3)),
                pbc=np.zeros(3, bool),
                energy=1.0,
            )
        )
    nodes = np.array([g.num_nodes for g in graphs])
    edges = np.array([g.num_edges for g in graphs])
    plan = plan_epoch(nodes, edges, 2)
    batch = PlanLoader(plan, graph_batch_maker(graphs)).build_step(0)
    assert batch.positions.shape == (2, plan.node_capacity, 3)
    assert batch.senders.shape == (2, plan.edge_capacity)
    assert batch.graph_mask.shape == (2, plan.graph_capacity)
    for d in range(2):
        assert batch.graph_mask[d].sum() == plan.batch(0, d).size
        assert batch.node_mask[d].sum() == nodes[plan.batch(0, d)].sum()
