"""MACE model in Flax NNX: config and presets, blocks, energies/forces/stress."""

from jax_mace.model.config import PRESETS, MACEConfig, preset
from jax_mace.model.mace import MACE, predict
from jax_mace.model.radial import bessel_basis, polynomial_cutoff, radial_embedding

__all__ = [
    "MACE",
    "PRESETS",
    "MACEConfig",
    "bessel_basis",
    "polynomial_cutoff",
    "predict",
    "preset",
    "radial_embedding",
]
