"""Balanced planner: correctness (every graph once, capacities), balance, randomness, errors."""

import numpy as np
import pytest

from jax_mace.balance import (
    CostModel,
    EpochPlanner,
    MemoryBudget,
    fit_cost_model,
    plan_epoch,
)
from jax_mace.balance.packing import repair


def mptrj_like(n, seed=0):
    rng = np.random.default_rng(seed)
    nodes = np.clip(np.round(np.exp(rng.normal(np.log(22), 0.83, n))), 1, 444).astype(np.int64)
    edges = np.round(nodes * np.clip(rng.normal(44, 15, n), 4, 160)).astype(np.int64)
    return nodes, edges


def independent_check(plan, nodes, edges):
    """Re-derive the guarantees without EpochPlan.check."""
    used = np.concatenate([b for step in plan.steps for b in step])
    expected = np.setdiff1d(np.arange(nodes.size), plan.dropped)
    assert np.array_equal(np.sort(used), expected)  # every graph exactly once
    limits = np.array(plan.capacities) - np.array(plan.reserve)
    for step in plan.steps:
        assert len(step) == plan.num_devices  # the same number of steps on every device
        for b in step:
            size = np.array([nodes[b].sum(), edges[b].sum(), b.size])
            assert np.all(size <= limits)


@pytest.mark.parametrize("num_devices", [1, 3, 4, 8])
def test_plan_uses_every_graph_once_within_capacity(num_devices):
    nodes, edges = mptrj_like(3000, seed=num_devices)
    plan = plan_epoch(nodes, edges, num_devices, seed=1)
    independent_check(plan, nodes, edges)
    plan.check(nodes, edges)
    assert plan.loads.shape == (plan.num_steps, num_devices, 3)


def test_targets_on_mptrj_like_distribution():
    nodes, edges = mptrj_like(40_000)
    plan = plan_epoch(nodes, edges, 16)
    stats = plan.summary()
    assert stats["waste"]["cost"] <= 0.03
    assert stats["waste"]["nodes"] <= 0.03 and stats["waste"]["edges"] <= 0.03
    assert stats["worst_max_over_mean"] <= 1.03
    independent_check(plan, nodes, edges)


def test_waste_and_ratio_definitions():
    nodes, edges = mptrj_like(2000)
    cost = CostModel(per_node=1.0, per_edge=0.2, per_graph=3.0, per_batch=100.0)
    plan = plan_epoch(nodes, edges, 4, cost=cost)
    bins = plan.num_steps * plan.num_devices
    assert plan.waste["nodes"] == pytest.approx(1 - nodes.sum() / (bins * plan.node_capacity))
    assert plan.waste["edges"] == pytest.approx(1 - edges.sum() / (bins * plan.edge_capacity))
    real = nodes.sum() + 0.2 * edges.sum() + 3.0 * nodes.size
    cap = plan.node_capacity + 0.2 * plan.edge_capacity + 3.0 * plan.graph_capacity
    assert plan.waste["cost"] == pytest.approx(1 - real / (bins * cap))
    load = np.array(
        [[nodes[b].sum() + 0.2 * edges[b].sum() + 3.0 * b.size for b in s] for s in plan.steps]
    )  # per_batch excluded from the load
    np.testing.assert_allclose(plan.step_max_over_mean, load.max(1) / load.mean(1))


def test_balanced_beats_fixed_count():
    from jax_mace.balance import baselines

    nodes, edges = mptrj_like(20_000)
    ours = plan_epoch(nodes, edges, 8)
    g = round(nodes.size / (ours.num_steps * 8))
    fixed = baselines.fixed_count(nodes, edges, 8, g)
    assert ours.waste["cost"] < 0.25 * fixed.waste["cost"]
    assert ours.step_max_over_mean.max() < fixed.step_max_over_mean.mean()


def test_epochs_reproducible_different_and_same_shapes():
    nodes, edges = mptrj_like(8000)
    planner = EpochPlanner(nodes, edges, 4, seed=3)
    p0, p0_again, p1 = planner.plan(0), planner.plan(0), planner.plan(1)
    assert np.array_equal(p0.indices, p0_again.indices)
    assert np.array_equal(p0.offsets, p0_again.offsets)
    assert p0.capacities == p1.capacities  # no recompilation between epochs
    other_seed = EpochPlanner(nodes, edges, 4, seed=4).plan(0)
    assert not np.array_equal(p0.indices, other_seed.indices)
    # Batch composition changes: pairs batched together in epoch 0 rarely meet again.
    batch_of = np.empty(nodes.size, np.int64)
    batch_of[p1.indices] = np.repeat(np.arange(p1.offsets.size - 1), np.diff(p1.offsets))
    same = total = 0
    for b in range(p0.offsets.size - 1):
        members = p0.indices[p0.offsets[b] : p0.offsets[b + 1]]
        counts = np.bincount(batch_of[members])
        same += int((counts * (counts - 1)).sum())
        total += members.size * (members.size - 1)
    chance = 1.0 / (p0.offsets.size - 1)
    assert same / total < 3 * chance
    # And the step order differs.
    assert not np.array_equal(p0.loads, p1.loads)


def test_uniform_sizes_pack_whole_graph_counts():
    rng = np.random.default_rng(0)
    nodes = np.full(1200, 21)
    edges = rng.integers(380, 421, 1200)
    plan = plan_epoch(nodes, edges, 4)
    independent_check(plan, nodes, edges)
    assert plan.waste["nodes"] < 0.01  # only the reserved padding node
    assert plan.waste["cost"] < 0.01
    assert plan.step_max_over_mean.max() < 1.01


def test_given_capacities_and_memory_budget():
    nodes, edges = mptrj_like(3000, seed=5)
    plan = plan_epoch(nodes, edges, 4, max_nodes=3000, max_edges=120_000, max_graphs=96)
    assert plan.capacities == (3000, 120_000, 96)
    independent_check(plan, nodes, edges)
    assert plan.waste["edges"] < 0.05
    plan = plan_epoch(nodes, edges, 4, max_graphs=40)
    assert plan.graph_capacity == 40
    independent_check(plan, nodes, edges)
    budget = MemoryBudget(total=64e6, per_node=2048, per_edge=512)
    plan = plan_epoch(nodes, edges, 4, memory=budget)
    independent_check(plan, nodes, edges)
    assert 2048 * plan.node_capacity + 512 * plan.edge_capacity <= 64e6


def test_oversize_graphs_error_or_drop():
    nodes, edges = mptrj_like(1000, seed=2)
    big = int(np.argmax(edges))
    with pytest.raises(ValueError, match="exceed the capacities"):
        plan_epoch(nodes, edges, 2, max_edges=int(edges[big]) - 1)
    plan = plan_epoch(nodes, edges, 2, max_edges=int(edges[big]) - 1, oversize="drop")
    assert big in plan.dropped
    independent_check(plan, nodes, edges)


def test_cost_with_per_graph_term_balances_counts():
    nodes, edges = mptrj_like(20_000, seed=7)
    plan = plan_epoch(nodes, edges, 8, cost=CostModel(1.0, 0.1, 20.0))
    assert plan.waste["cost"] < 0.03
    assert plan.step_max_over_mean.max() < 1.03


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_devices": 0}, "num_devices must be a positive integer"),
        ({"num_edges": np.ones(5, np.int64)}, "same length"),
        ({"num_nodes": -np.ones(50, np.int64)}, "num_nodes must be >= 0"),
        ({"num_nodes": np.ones((5, 10), np.int64)}, "num_nodes must be a 1-D"),
        ({"num_nodes": np.full(50, 1.5)}, "num_nodes must hold integer"),
        ({"num_devices": 64}, "fewer than num_devices"),
        ({"oversize": "skip"}, "oversize must be"),
        ({"max_nodes": 0}, "max_nodes must be a positive integer"),
        ({"max_graphs": 1}, "max_graphs=1 leaves no room"),
        ({"slack": -0.1}, "slack must be in"),
        ({"epoch": -1}, "epoch must be an integer"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {
        "num_nodes": np.full(50, 10, np.int64),
        "num_edges": np.full(50, 100, np.int64),
        "num_devices": 2,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plan_epoch(args.pop("num_nodes"), args.pop("num_edges"), args.pop("num_devices"), **args)


def test_repair_moves_graphs_out_of_overfull_bins():
    rng = np.random.default_rng(0)
    sizes = np.stack([rng.integers(1, 10, 400), rng.integers(10, 100, 400), np.ones(400)], 1)
    assign = np.zeros(400, dtype=np.int64)
    assign[200:] = rng.integers(1, 8, 200)  # bin 0 hopelessly overfull
    limits = sizes.sum(0) / 8 * 1.05
    fits, loads_after = repair(assign, sizes.astype(float), limits, 8, max_iter=500)
    assert fits
    loads = np.stack([np.bincount(assign, weights=sizes[:, d], minlength=8) for d in range(3)], 1)
    assert np.all(loads <= limits)
    np.testing.assert_allclose(loads, loads_after)


def test_fit_cost_model_recovers_coefficients():
    rng = np.random.default_rng(0)
    nodes = rng.integers(100, 2000, 60)
    edges = nodes * rng.uniform(10, 80, 60)
    graphs = rng.integers(1, 64, 60)
    times = 2e-6 * nodes + 3e-7 * edges + 1e-5 * graphs + 4e-3
    times *= 1 + rng.normal(0, 1e-3, 60)
    model = fit_cost_model(nodes, edges, graphs, times)
    assert model.per_node == pytest.approx(2e-6, rel=0.05)
    assert model.per_edge == pytest.approx(3e-7, rel=0.05)
    assert model.per_batch == pytest.approx(4e-3, rel=0.05)
    # Non-negativity: a negative true slope is clamped to 0, not returned.
    model = fit_cost_model(nodes, edges, graphs, 1e-6 * nodes - 1e-9 * edges + 1e-3)
    assert model.per_edge >= 0 and model.per_node > 0
    with pytest.raises(ValueError, match="same length"):
        fit_cost_model(nodes, edges, graphs, times[:-1])
    with pytest.raises(ValueError, match="at least 4"):
        fit_cost_model(nodes[:3], edges[:3], graphs[:3], times[:3])
    with pytest.raises(ValueError, match="CostModel.per_edge must be"):
        CostModel(per_edge=-1.0)


def test_graphs_without_edges_get_nonzero_capacities():
    nodes, edges = np.full(100, 3), np.zeros(100, np.int64)
    planner = EpochPlanner(nodes, edges, 4)
    for epoch in range(2):
        plan = planner.plan(epoch)
        independent_check(plan, nodes, edges)
        assert min(plan.capacities) >= 1
