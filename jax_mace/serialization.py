"""Saving and loading a trained MACE model: ``config.json`` (hyperparameters, element table and
dataset statistics) plus ``params.npz`` (weights keyed by their path in the module tree)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import nnx

from jax_mace.model import MACE, MACEConfig

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.npz"
FORMAT_VERSION = 1


def _path_key(path) -> str:
    parts = []
    for p in path:
        key = getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))
        parts.append(str(key))
    return "/".join(parts)


def flatten_params(state) -> dict[str, np.ndarray]:
    """``{"interactions/0/linear/w/0e": array, ...}`` from an NNX state (or any pytree)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {_path_key(p): np.asarray(x) for p, x in leaves}


def unflatten_params(template, flat: dict[str, np.ndarray], where: str = "params"):
    """Pytree shaped like ``template`` with the arrays of ``flat``; errors name missing keys and
    shape mismatches."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = [_path_key(p) for p, _ in leaves]
    missing = [k for k in keys if k not in flat]
    extra = sorted(set(flat) - set(keys))
    if missing or extra:
        raise ValueError(f"{where}: missing parameters {missing[:5]}, unexpected {extra[:5]}")
    out = []
    for k, (_, ref) in zip(keys, leaves, strict=True):
        arr = np.asarray(flat[k])
        if arr.shape != np.shape(ref):
            raise ValueError(f"{where}: {k} has shape {arr.shape}, model expects {np.shape(ref)}")
        out.append(arr.astype(np.asarray(ref).dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def save_model(directory: str | os.PathLike, model: MACE, extra: dict | None = None) -> None:
    """Write ``config.json`` and ``params.npz`` into ``directory`` (created if needed)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "model": model.config.to_dict()}
    if extra:
        meta["extra"] = extra
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    np.savez(os.path.join(directory, PARAMS_FILE), **flatten_params(nnx.state(model, nnx.Param)))


def load_model(directory: str | os.PathLike, **config_overrides) -> MACE:
    """Rebuild the model saved in ``directory``; ``config_overrides`` (e.g.
    ``contraction_backend="reference"``) replace fields of the saved config."""
    directory = os.fspath(directory)
    cfg_path = os.path.join(directory, CONFIG_FILE)
    params_path = os.path.join(directory, PARAMS_FILE)
    for path in (cfg_path, params_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: missing (not a saved MACE model directory?)")
    with open(cfg_path) as f:
        meta = json.load(f)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: unsupported format_version {meta.get('format_version')}")
    config = MACEConfig.from_dict(meta["model"]).replace(**config_overrides)
    model = MACE(config, rngs=nnx.Rngs(0))
    with np.load(params_path) as data:
        flat = dict(data)
    params = unflatten_params(nnx.state(model, nnx.Param), flat, where=params_path)
    nnx.update(model, params)
    return model
