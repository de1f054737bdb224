"""The symmetric contraction (MACE product basis): path lists, the pure-JAX reference, the backend
dispatch and the NNX module."""

from jax_mace.symmetric_contraction.dispatch import contract
from jax_mace.symmetric_contraction.module import SymmetricContraction
from jax_mace.symmetric_contraction.paths import PathList, build_path_list, dense_coupling
from jax_mace.symmetric_contraction.reference import symmetric_contraction

__all__ = [
    "PathList",
    "SymmetricContraction",
    "build_path_list",
    "contract",
    "dense_coupling",
    "symmetric_contraction",
]
