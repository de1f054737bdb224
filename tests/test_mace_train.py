"""Training: CLI end to end (energy + forces + stress), exact resume, padding-free loss."""

import json
import os

import ase.build
import ase.io
import numpy as np
import pytest
import yaml
from ase.calculators.emt import EMT

from jax_mace.data import configurations_to_graphs, pad_graphs, read_configurations
from jax_mace.train import load_config
from jax_mace.train.cli import main
from jax_mace.train.loss import loss_and_sums


def _emt_frames(n, seed):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.numbers[rng.integers(0, len(atoms))] = 13  # one Al
        atoms.rattle(0.08, seed=int(seed * 100 + i))
        atoms.set_cell(atoms.cell.array * (1 + 0.02 * rng.normal()), scale_atoms=True)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_stress()
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def emt_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("emt")
    ase.io.write(d / "train.xyz", _emt_frames(10, 0), format="extxyz")
    ase.io.write(d / "test.xyz", _emt_frames(4, 1), format="extxyz")
    return d


def _config(emt_files, out, **training):
    cfg = {
        "data": {
            "train_file": str(emt_files / "train.xyz"),
            "test_file": str(emt_files / "test.xyz"),
            "split_pool": None,
            "num_train": 8,
            "num_valid": 2,
        },
        "model": {
            "r_max": 3.0,
            "num_bessel": 4,
            "max_ell": 2,
            "num_interactions": 2,
            "hidden_irreps": "4x0e+4x1o",
            "correlation": 2,
            "radial_mlp": [8],
            "readout_mlp": 4,
        },
        "training": {
            "batch_size": 3,
            "eval_batch_size": 6,
            "max_epochs": 2,
            "lr": 0.01,
            "schedule": "plateau",
            "stress_weight": 10.0,
            "stage_two_fraction": 0.5,
        }
        | training,
        "output": {"dir": str(out), "progress_bar": False},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _params(run_dir):
    with np.load(os.path.join(run_dir, "model", "params.npz")) as data:
        return dict(data)


def test_cli_trains_and_resumes_exactly(emt_files, tmp_path):
    straight = _config(emt_files, tmp_path / "straight")
    assert main(["--config", straight]) == 0
    results = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert results["epochs"] == 2 and len(results["history"]) == 2
    for split in ("valid", "test"):
        for key in ("mae_energy_mev", "mae_forces_mev", "mae_stress_mev", "rmse_forces_mev"):
            assert np.isfinite(results[split][key])
    assert results["num_test"] == 4

    # One epoch, then resume for the second: the same weights as the straight run.
    split_run = _config(emt_files, tmp_path / "split")
    assert main(["--config", split_run, "--set", "output.stop_after_epochs=1"]) == 0
    first = json.loads((tmp_path / "split" / "results.json").read_text())
    assert first["stop_reason"] == "stop_after_epochs" and first["epochs"] == 1
    assert main(["--config", split_run, "--resume"]) == 0
    a, b = _params(tmp_path / "straight"), _params(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
    hist = json.loads((tmp_path / "split" / "results.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2]


def test_padding_does_not_change_loss(emt_files):
    import jax.numpy as jnp

    configs = read_configurations(emt_files / "train.xyz")[:3]
    graphs = configurations_to_graphs(configs, (13, 29), 3.0)
    n = sum(g.num_nodes for g in graphs)
    e = sum(g.num_edges for g in graphs)
    weights = {"energy": 1.0, "forces": 10.0, "stress": 5.0}
    rng = np.random.default_rng(0)
    fake = {"forces": rng.normal(size=(n, 3)), "stress": rng.normal(size=(3, 3, 3))}
    fake["energy"] = rng.normal(size=3)

    def loss(n_node, n_edge, n_graph):
        batch = pad_graphs(graphs, n_node, n_edge, n_graph)
        pred = {
            "energy": jnp.zeros(n_graph).at[:3].set(fake["energy"]),
            "forces": jnp.zeros((n_node, 3)).at[:n].set(fake["forces"]),
            "stress": jnp.zeros((n_graph, 3, 3)).at[:3].set(fake["stress"]),
        }
        return loss_and_sums(pred, batch, weights)

    l1, s1 = loss(n, e, 3)
    l2, s2 = loss(n + 7, e + 30, 6)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for k in s1:
        np.testing.assert_allclose(s1[k], s2[k], rtol=1e-6, err_msg=k)


def test_config_errors_name_file_and_section(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"train_file": "x.xyz"}, "training": {"lr2": 1}}))
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key\(s\) \['lr2'\] in section"):
        load_config(str(path))
    path.write_text(yaml.safe_dump({"data": {"train_file": "x.xyz"}, "model": {"r_cut": 1}}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['r_cut'\] in section 'model'"):
        load_config(str(path))
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
