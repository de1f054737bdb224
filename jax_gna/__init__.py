"""Generalized Neighborhood Attention (GNA) for JAX.

Sliding-window, strided and blocked neighbourhood attention on 1-D/2-D/3-D token grids with
NATTEN's exact semantics, a memory-efficient pure-JAX reference and an optional fused CUDA
kernel for Hopper GPUs.
"""

from jax_gna.ffi_loader import CudaExtension, load_cuda_extension


def cuda_status() -> CudaExtension:
    """Whether the GNA CUDA extension is built, ABI-compatible and usable on a visible GPU."""
    return load_cuda_extension("jax_gna._gna_cuda")


__all__ = ["CudaExtension", "cuda_status"]
