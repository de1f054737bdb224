"""Saved models and the ASE calculator: round trip, ASE consistency, MD."""

import ase
import ase.build
import jax
import numpy as np
import pytest
from ase import units
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.verlet import VelocityVerlet
from flax import nnx

from jax_mace.calculator import MACECalculator
from jax_mace.data import atoms_to_configuration, configuration_to_graph, pad_graphs
from jax_mace.model import MACE, MACEConfig, predict
from jax_mace.serialization import load_model, save_model


@pytest.fixture(scope="module")
def model():
    cfg = MACEConfig(
        atomic_numbers=(1, 6, 8),
        r_max=3.0,
        num_bessel=4,
        max_ell=2,
        hidden_irreps="4x0e+4x1o",
        correlation=2,
        radial_mlp=(8,),
        readout_mlp=4,
        avg_num_neighbors=5.0,
        e0s=(-13.0, -1030.0, -2040.0),
        scale=0.5,
    )
    return MACE(cfg, rngs=nnx.Rngs(3))


def _predict(model, batch, compute_stress=False):
    graphdef, state = nnx.split(model)
    f = jax.jit(lambda s, b: predict(nnx.merge(graphdef, s), b, compute_stress))
    return f(state, batch)


def _crystal():
    atoms = ase.build.bulk("C", "diamond", a=3.4)
    atoms.numbers[1] = 8
    atoms.rattle(0.05, seed=0)
    return atoms


def test_save_load_round_trip(model, tmp_path):
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    a = jax.tree.leaves(nnx.state(model, nnx.Param))
    b = jax.tree.leaves(nnx.state(loaded, nnx.Param))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    atoms = ase.build.molecule("CH3OH")
    graph = configuration_to_graph(atoms_to_configuration(atoms), (1, 6, 8), 3.0)
    batch = pad_graphs([graph], 8, 64, 2)
    graphdef, state = nnx.split(model)
    graphdef_loaded, state_loaded = nnx.split(loaded)
    assert graphdef_loaded == graphdef
    f = jax.jit(lambda s, b: predict(nnx.merge(graphdef, s), b)["forces"])
    np.testing.assert_array_equal(f(state, batch), f(state_loaded, batch))
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        load_model(tmp_path / "nothing")


def test_calculator_matches_model_and_ase_numerics(model, tmp_path):
    save_model(tmp_path / "m", model)
    calc = MACECalculator(str(tmp_path / "m"))
    atoms = _crystal()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    graph = configuration_to_graph(atoms_to_configuration(atoms), (1, 6, 8), 3.0)
    ref = _predict(model, pad_graphs([graph], 2, graph.num_edges, 1), compute_stress=True)
    np.testing.assert_allclose(energy, float(ref["energy"][0]), rtol=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=1e-5)
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), energy, rtol=1e-6)
    num_stress = calculate_numerical_stress(atoms, eps=1e-3)
    np.testing.assert_allclose(atoms.get_stress(), num_stress, atol=2e-4)
    num_forces = calculate_numerical_forces(atoms, eps=1e-3)
    np.testing.assert_allclose(atoms.get_forces(), num_forces, atol=2e-3)


def test_md_runs_with_ase_integrator(model):
    atoms = _crystal()
    atoms.calc = MACECalculator(model)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    start = atoms.get_total_energy()
    dyn.run(5)
    assert dyn.nsteps == 5
    assert np.all(np.isfinite(atoms.positions))
    assert abs(atoms.get_total_energy() - start) < 0.05 * max(1.0, abs(start))
    molecule = ase.build.molecule("H2O")
    molecule.calc = MACECalculator(model)
    assert np.isfinite(molecule.get_forces()).all()
    with pytest.raises(ValueError, match="periodic in all three"):
        molecule.calc.calculate(molecule, ["stress"])
