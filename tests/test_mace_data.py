"""Data pipeline: reading, labels and their errors, neighbour lists, padding, statistics."""

import itertools

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from jax_mace.data import (
    KeySpec,
    atoms_to_configuration,
    capacity_for,
    compute_e0s,
    compute_statistics,
    configuration_to_graph,
    configurations_to_graphs,
    graph_sizes,
    iterate_batches,
    neighbour_edges,
    pad_graphs,
    read_configurations,
)


def _labelled(atoms, energy, stress=False, seed=0):
    rng = np.random.default_rng(seed)
    results = {"energy": energy, "forces": rng.normal(size=(len(atoms), 3))}
    if stress:
        results["stress"] = rng.normal(size=6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _write(tmp_path, frames, name="data.xyz"):
    path = tmp_path / name
    ase.io.write(path, frames, format="extxyz")
    return str(path)


def test_reads_labels_from_extxyz(tmp_path):
    frames = [
        _labelled(ase.build.molecule("H2O"), -14.0),
        _labelled(ase.build.bulk("Cu", "fcc", a=3.6), -3.5, stress=True),
    ]
    path = _write(tmp_path, frames)
    configs = read_configurations(path, require=("energy", "forces"))
    assert len(configs) == 2
    assert configs[0].energy == pytest.approx(-14.0)
    np.testing.assert_allclose(configs[0].forces, frames[0].get_forces())
    assert configs[0].stress is None and configs[1].stress.shape == (3, 3)
    np.testing.assert_allclose(configs[1].stress, configs[1].stress.T)
    assert configs[1].pbc.all() and not configs[0].pbc.any()
    assert configs[1].label.endswith("frame 1")


def test_custom_key_names(tmp_path):
    atoms = ase.build.molecule("CH4")
    atoms.info["REF_energy"] = -24.0
    atoms.arrays["REF_forces"] = np.ones((5, 3))
    path = _write(tmp_path, [atoms])
    keys = KeySpec(energy="REF_energy", forces="REF_forces")
    (cfg,) = read_configurations(path, keys=keys, require=("energy", "forces"))
    assert cfg.energy == -24.0
    np.testing.assert_array_equal(cfg.forces, 1.0)


def test_missing_label_names_file_and_frame(tmp_path):
    frames = [_labelled(ase.build.molecule("H2O"), -1.0), ase.build.molecule("H2O")]
    path = _write(tmp_path, frames)
    with pytest.raises(ValueError, match=r"data\.xyz, frame 1: missing required label 'energy'"):
        read_configurations(path, require=("energy",))


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\nenergy=1.0\nH 0 0\n")
    with pytest.raises(ValueError, match="bad.xyz: cannot be read"):
        read_configurations(str(bad))
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        read_configurations(str(tmp_path / "nope.xyz"))


def test_bad_forces_shape_and_nan(tmp_path):
    atoms = ase.build.molecule("H2O")
    atoms.info["energy"] = float("nan")
    with pytest.raises(ValueError, match="frame 3: energy 'energy' is not finite"):
        atoms_to_configuration(atoms, label="x.xyz, frame 3")
    atoms.info["energy"] = 1.0
    atoms.info["forces"] = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"forces 'forces' must have shape \(3, 3\)"):
        atoms_to_configuration(atoms, label="x.xyz, frame 3")


def test_unknown_element_and_close_atoms():
    cfg = atoms_to_configuration(ase.build.molecule("NH3"), label="f.xyz, frame 7")
    with pytest.raises(ValueError, match=r"f.xyz, frame 7: unknown element\(s\) N \(Z=7\)"):
        configuration_to_graph(cfg, (1, 6), 3.0)
    close = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]])
    cfg = atoms_to_configuration(close, label="g.xyz, frame 2")
    with pytest.raises(ValueError, match="g.xyz, frame 2: atoms 0 and 1 are 0.0500 A apart"):
        configuration_to_graph(cfg, (1,), 3.0)


def _brute_force_edges(positions, cell, r_max, reach=3):
    edges = set()
    for s, r in itertools.product(range(len(positions)), repeat=2):
        for shift in itertools.product(range(-reach, reach + 1), repeat=3):
            d = positions[r] - positions[s] + np.array(shift) @ cell
            if 1e-8 < np.linalg.norm(d) < r_max:
                edges.add((s, r, shift))
    return edges


def test_periodic_neighbour_list_matches_brute_force():
    atoms = ase.build.bulk("NaCl", "rocksalt", a=4.0)
    atoms.rattle(0.1, seed=2)
    atoms.positions[0] += atoms.cell[0] * 1.3  # outside the box: shifts must still be right
    s, r, shifts, lengths = neighbour_edges(atoms.positions, atoms.cell.array, atoms.pbc, 4.1)
    got = {(a, b, tuple(int(x) for x in sh)) for a, b, sh in zip(s, r, shifts, strict=True)}
    assert got == _brute_force_edges(atoms.positions, atoms.cell.array, 4.1)
    vec = atoms.positions[r] - atoms.positions[s] + shifts @ atoms.cell.array
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), lengths)
    assert any(a == b for a, b, _ in got)  # periodic self-images are edges


def test_slab_and_single_atom():
    slab = ase.build.fcc111("Cu", size=(2, 2, 2), vacuum=None)
    slab.pbc = [True, True, False]
    slab.cell[2] = 0.0
    s, r, shifts, _ = neighbour_edges(slab.positions, slab.cell.array, slab.pbc, 3.0)
    assert len(s) > 0 and np.all(shifts[:, 2] == 0)
    s, _, _, _ = neighbour_edges(np.zeros((1, 3)), np.zeros((3, 3)), np.zeros(3, bool), 3.0)
    assert len(s) == 0


def _graphs():
    frames = [ase.build.molecule(m) for m in ("H2O", "CH4", "C2H6")] + [
        ase.build.bulk("C", "diamond", a=3.6)
    ]
    frames = [_labelled(a, -float(i), stress=a.pbc.all()) for i, a in enumerate(frames)]
    configs = [atoms_to_configuration(a, label=f"frame {i}") for i, a in enumerate(frames)]
    return configurations_to_graphs(configs, (1, 6, 8), 2.5)


def test_pad_graphs_layout_and_masks():
    graphs = _graphs()
    nodes, edges = graph_sizes(graphs)
    n, e = int(nodes.sum()), int(edges.sum())
    batch = pad_graphs(graphs, n + 3, e + 5, len(graphs) + 2)
    assert batch.n_node == n + 3 and batch.n_edge == e + 5 and batch.n_graph == len(graphs) + 2
    assert batch.node_mask.sum() == n and batch.edge_mask.sum() == e
    np.testing.assert_array_equal(batch.graph_mask, [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch.num_nodes[:4], nodes)
    np.testing.assert_array_equal(batch.node_graph[:n], np.repeat(np.arange(4), nodes))
    assert np.all(batch.node_graph[n:] == len(graphs) + 1)
    assert np.all(batch.senders[e:] == n + 2) and np.all(batch.receivers[e:] == n + 2)
    np.testing.assert_array_equal(batch.stress_mask, [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(batch.energy[:4], [0, -1, -2, -3])
    # edges of graph 1 point at graph 1's nodes
    e0 = int(edges[0])
    sl = slice(e0, e0 + int(edges[1]))
    assert np.all(batch.node_graph[batch.senders[sl]] == 1)
    # exact fit is allowed
    exact = pad_graphs(graphs, n, e, len(graphs))
    assert exact.node_mask.all() and exact.edge_mask.all() and exact.graph_mask.all()


def test_pad_graphs_capacity_errors():
    graphs = _graphs()
    nodes, edges = graph_sizes(graphs)
    with pytest.raises(ValueError, match=r"need n_node >= \d+, capacity is 3"):
        pad_graphs(graphs, 3, 10_000, 10)
    with pytest.raises(ValueError, match="need n_edge"):
        pad_graphs(graphs, 1000, int(edges.sum()) - 1, 10)
    with pytest.raises(ValueError, match="need n_graph >= 4, capacity is 2"):
        pad_graphs(graphs, 1000, 10_000, 2)
    with pytest.raises(ValueError, match="n_node must be a positive integer"):
        pad_graphs(graphs, 0, 10, 10)


def test_batching_covers_every_graph_once():
    graphs = _graphs() * 3
    cap = capacity_for(graphs, 4)
    seen = 0
    for batch in iterate_batches(graphs, 4, cap, shuffle=True, seed=1):
        assert (batch.n_node, batch.n_edge, batch.n_graph) == (cap.n_node, cap.n_edge, 5)
        seen += int(batch.graph_mask.sum())
    assert seen == len(graphs)


def test_statistics_recover_reference_energies():
    rng = np.random.default_rng(0)
    e0_true = np.array([-13.6, -1030.0, -2040.0])
    graphs = []
    for i in range(12):
        n = rng.integers(2, 6, size=3)
        numbers = np.repeat([1, 6, 8], n)
        atoms = ase.Atoms(numbers=numbers, positions=rng.uniform(0, 8, (len(numbers), 3)))
        energy = float(e0_true @ n + 0.01 * rng.normal())
        cfg = atoms_to_configuration(_labelled(atoms, energy, seed=i), label=f"{i}")
        graphs.append(configuration_to_graph(cfg, (1, 6, 8), 2.0, min_distance=0.01))
    np.testing.assert_allclose(compute_e0s(graphs, 3), e0_true, atol=0.05)
    stats = compute_statistics(graphs, 3)
    assert abs(stats.shift) < 0.01
    assert stats.avg_num_neighbors == pytest.approx(
        sum(g.num_edges for g in graphs) / sum(g.num_nodes for g in graphs)
    )
    assert stats.scale == pytest.approx(1.0, rel=0.2)  # forces ~ N(0, 1)
    with pytest.raises(ValueError, match="method must be"):
        compute_e0s(graphs, 3, "median")


def test_random_cluster_respects_spacing_and_cutoff():
    from jax_mace.data.synthetic import random_cluster

    g = random_cluster(
        np.random.default_rng(0), atoms=12, side=5.0, min_distance=1.2, r_max=3.0, num_species=4
    )
    dist = np.linalg.norm(g.positions[:, None] - g.positions[None], axis=-1)
    assert np.all(dist[~np.eye(12, dtype=bool)] > 1.2 - 1e-5)
    expected = {(i, j) for i in range(12) for j in range(12) if i != j and dist[i, j] < 3.0}
    assert set(zip(g.senders.tolist(), g.receivers.tolist(), strict=True)) == expected
    assert g.species.min() >= 0 and g.species.max() < 4
    again = random_cluster(np.random.default_rng(0), 12, 5.0, 1.2, 3.0, 4)
    np.testing.assert_array_equal(again.positions, g.positions)
