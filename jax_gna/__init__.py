"""Generalized Neighborhood Attention (GNA) for JAX.

Sliding-window, strided and blocked neighbourhood attention on 1-D/2-D/3-D token grids with
NATTEN's exact semantics, a memory-efficient pure-JAX reference and an optional fused CUDA
kernel for Hopper GPUs. Flax layers live in :mod:`jax_gna.nnx` and :mod:`jax_gna.linen`.
"""

from jax_gna.api import (
    BackendChoice,
    last_backend,
    na1d,
    na2d,
    na3d,
    neighborhood_attention,
    select_backend,
)
from jax_gna.dense import attention, merge_attentions
from jax_gna.ffi_loader import CudaExtension, load_cuda_extension
from jax_gna.layout import TokenLayout, make_layout, permute_tokens, unpermute_tokens
from jax_gna.reference import gna_reference
from simulator.geometry import GNAParams, make_params


def cuda_status() -> CudaExtension:
    """Whether the GNA CUDA extension is built, ABI-compatible and usable on a visible GPU."""
    return load_cuda_extension("jax_gna._gna_cuda")


__all__ = [
    "BackendChoice",
    "CudaExtension",
    "GNAParams",
    "TokenLayout",
    "attention",
    "cuda_status",
    "gna_reference",
    "last_backend",
    "make_layout",
    "make_params",
    "merge_attentions",
    "na1d",
    "na2d",
    "na3d",
    "neighborhood_attention",
    "permute_tokens",
    "select_backend",
    "unpermute_tokens",
]
