"""MACE model physics: symmetries, forces and stress as derivatives, extensivity, padding."""

import functools

import ase
import ase.build
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_mace.data import atoms_to_configuration, configuration_to_graph, pad_graphs
from jax_mace.model import MACE, MACEConfig, predict
from jax_mace.testing import random_rotation

Z_TABLE = (1, 6, 8)
R_MAX = 3.0


@functools.cache
def _model(hidden="4x0e+4x1o", correlation=3, max_ell=3):
    cfg = MACEConfig(
        atomic_numbers=Z_TABLE,
        r_max=R_MAX,
        num_bessel=4,
        max_ell=max_ell,
        num_interactions=2,
        hidden_irreps=hidden,
        correlation=correlation,
        radial_mlp=(8, 8),
        readout_mlp=4,
        avg_num_neighbors=4.0,
        e0s=(-1.0, -2.0, -3.0),
        scale=1.3,
        shift=0.1,
    )
    return MACE(cfg, rngs=nnx.Rngs(0))


def _molecule(seed=0, n=6):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 2.6, size=(n, 3))
    while True:  # keep atoms apart
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(n) * 9
        if d.min() > 0.8:
            break
        pos = rng.uniform(0, 2.6, size=(n, 3))
    return ase.Atoms(numbers=rng.choice(Z_TABLE, size=n), positions=pos)


def _crystal():
    atoms = ase.build.bulk("C", "diamond", a=3.2) * (1, 1, 1)
    atoms.numbers[1] = 8
    atoms.rattle(0.05, seed=1)
    return atoms


# One padded shape for every test, so each model compiles once per dtype.
CAPACITY = (40, 1200, 4)


def _batch(atoms_list, capacity=CAPACITY):
    graphs = [configuration_to_graph(atoms_to_configuration(a), Z_TABLE, R_MAX) for a in atoms_list]
    return pad_graphs(graphs, *capacity, dtype=jnp.zeros(()).dtype)


@functools.cache
def _predict_fn(model_key):
    graphdef, state = nnx.split(_model(*model_key))

    @jax.jit
    def f(state, batch):
        return predict(nnx.merge(graphdef, state), batch, compute_stress=True)

    return lambda batch: f(state, batch)


def _run(batch, model_key=()):
    return jax.tree.map(np.asarray, _predict_fn(model_key)(batch))


def test_rotation_translation_permutation_symmetry():
    atoms = _molecule(0, 7)
    base = _run(_batch([atoms]))
    for seed, improper in [(1, False), (2, True)]:
        r = random_rotation(seed, improper)
        moved = atoms.copy()
        moved.positions = atoms.positions @ r.T + np.array([0.3, -1.2, 4.0])
        out = _run(_batch([moved]))
        np.testing.assert_allclose(out["energy"], base["energy"], rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(out["forces"], base["forces"] @ r.T, atol=1e-4)
    perm = np.random.default_rng(3).permutation(len(atoms))
    out = _run(_batch([atoms[perm]]))
    np.testing.assert_allclose(out["energy"], base["energy"], rtol=1e-6, atol=1e-4)
    n = len(atoms)
    np.testing.assert_allclose(out["forces"][:n], base["forces"][perm], atol=1e-5)
    assert np.abs(base["forces"]).max() > 1e-3  # forces are not trivially zero


def test_periodic_rotation_equivariance_of_forces_and_stress():
    atoms = _crystal()
    base = _run(_batch([atoms]))
    r = random_rotation(4)
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ r.T, scale_atoms=False)
    rotated.positions = atoms.positions @ r.T
    out = _run(_batch([rotated]))
    np.testing.assert_allclose(out["energy"], base["energy"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(out["forces"], base["forces"] @ r.T, atol=2e-4)
    np.testing.assert_allclose(out["stress"][0], r @ base["stress"][0] @ r.T, atol=2e-5)


def test_forces_equal_finite_differences():
    with jax.enable_x64(True):
        atoms = _molecule(5, 5)
        out = _run(_batch([atoms]))
        h = 1e-5
        for i, k in [(0, 0), (2, 1), (4, 2)]:
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, k] += h
            minus.positions[i, k] -= h
            e_p = _run(_batch([plus]))["energy"][0]
            e_m = _run(_batch([minus]))["energy"][0]
            np.testing.assert_allclose(-(e_p - e_m) / (2 * h), out["forces"][i, k], atol=1e-6)


def test_stress_equals_finite_differences_under_strain():
    with jax.enable_x64(True):
        atoms = _crystal()
        out = _run(_batch([atoms]))
        volume = atoms.get_volume()
        h = 1e-5
        for a, b in [(0, 0), (1, 2), (2, 0)]:
            energies = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] += sign * h / 2
                eps[b, a] += sign * h / 2
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                energies.append(_run(_batch([strained]))["energy"][0])
            fd = (energies[0] - energies[1]) / (2 * h) / volume
            np.testing.assert_allclose(out["stress"][0, a, b], fd, atol=1e-7)
        assert np.abs(out["stress"]).max() > 1e-4


def test_supercell_energy_per_atom():
    atoms = _crystal()
    small = _run(_batch([atoms]))
    big_atoms = atoms * (2, 1, 2)
    big = _run(_batch([big_atoms]))
    np.testing.assert_allclose(
        big["energy"][0] / len(big_atoms), small["energy"][0] / len(atoms), rtol=1e-6
    )
    n = len(atoms)
    np.testing.assert_allclose(big["forces"][:n], small["forces"][:n], atol=2e-5)
    np.testing.assert_allclose(big["stress"][0], small["stress"][0], atol=2e-6)


def test_padding_changes_nothing():
    mols = [_molecule(6, 5), _molecule(7, 4), _crystal()]
    tight_capacity = (sum(len(m) for m in mols), None, 3)
    graphs = [configuration_to_graph(atoms_to_configuration(a), Z_TABLE, R_MAX) for a in mols]
    tight_capacity = (tight_capacity[0], sum(g.num_edges for g in graphs), 3)
    tight = _run(_batch(mols, tight_capacity))
    padded = _run(_batch(mols))
    n = sum(len(m) for m in mols)
    np.testing.assert_allclose(padded["energy"][:3], tight["energy"], rtol=1e-6)
    np.testing.assert_array_equal(padded["energy"][3:], 0.0)
    assert padded["forces"].shape[0] > n and padded["energy"].shape[0] > 3
    np.testing.assert_allclose(padded["forces"][:n], tight["forces"], atol=1e-6)
    np.testing.assert_array_equal(padded["forces"][n:], 0.0)
    np.testing.assert_allclose(padded["stress"][:3], tight["stress"], atol=1e-7)
    assert np.all(np.isfinite(padded["forces"]))
    # The graphs are independent: alone, each gives the same energy.
    alone = _run(_batch([mols[1]]))
    np.testing.assert_allclose(alone["energy"][0], tight["energy"][1], rtol=1e-6)


@pytest.mark.parametrize("hidden", ["4x0e", "4x0e+4x1o+4x2e"])
def test_other_hidden_irreps_are_invariant(hidden):
    atoms = _molecule(8, 6)
    key = (hidden, 2, 2)
    base = _run(_batch([atoms]), model_key=key)
    r = random_rotation(9)
    moved = atoms.copy()
    moved.positions = atoms.positions @ r.T
    out = _run(_batch([moved]), model_key=key)
    np.testing.assert_allclose(out["energy"], base["energy"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(out["forces"], base["forces"] @ r.T, atol=1e-4)


def test_isolated_atoms_have_no_forces():
    atoms = [ase.Atoms("O", positions=[[0, 0, 0]]), ase.Atoms("H", positions=[[0, 0, 0]])]
    out = _run(_batch(atoms))
    assert np.isfinite(out["energy"]).all()
    np.testing.assert_array_equal(out["forces"], 0.0)
    assert out["energy"][0] != out["energy"][1]
