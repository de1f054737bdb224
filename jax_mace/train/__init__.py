"""Training MACE: config, data splits, loss, jitted steps, checkpoints, loop and CLI."""

from jax_mace.train.cli import main
from jax_mace.train.config import TrainConfig, config_from_dict, load_config

__all__ = ["TrainConfig", "config_from_dict", "load_config", "main", "train"]


def train(*args, **kwargs):
    """See :func:`jax_mace.train.loop.train` (imported lazily)."""
    from jax_mace.train.loop import train as _train

    return _train(*args, **kwargs)
