"""Baseline distribution schemes: same guarantees (every graph once, fits), their own rules."""

import numpy as np
import pytest

from jax_mace.balance import baselines, plan_epoch


def sizes(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    nodes = np.clip(np.round(np.exp(rng.normal(np.log(22), 0.83, n))), 1, 444).astype(np.int64)
    return nodes, np.round(nodes * np.clip(rng.normal(44, 15, n), 4, 160)).astype(np.int64)


def test_fixed_count_gives_each_device_the_same_count():
    nodes, edges = sizes()
    plan = baselines.fixed_count(nodes, edges, 4, 16)
    plan.check(nodes, edges)
    counts = plan.loads[..., 2]
    assert np.all(counts[:-1] == 16)  # the last step shares out the remainder
    assert counts.sum() == nodes.size


def test_greedy_stream_respects_capacities():
    nodes, edges = sizes()
    caps = plan_epoch(nodes, edges, 4).capacities
    plan = baselines.greedy_stream(nodes, edges, 4, caps)
    assert plan.capacities == caps
    plan.check(nodes, edges)
    with pytest.raises(ValueError, match="capacities must fit every single graph"):
        baselines.greedy_stream(nodes, edges, 4, (10, 10, 4))


def test_lpt_per_step_balances_within_step():
    nodes, edges = sizes()
    plan = baselines.lpt_per_step(nodes, edges, 4, 16)
    plan.check(nodes, edges)
    fixed = baselines.fixed_count(nodes, edges, 4, 16)
    assert plan.step_max_over_mean[:-1].mean() < fixed.step_max_over_mean[:-1].mean()
    with pytest.raises(ValueError, match="graphs_per_device"):
        baselines.lpt_per_step(nodes, edges, 4, 0)
