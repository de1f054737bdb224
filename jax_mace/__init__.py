"""MACE, the equivariant interatomic potential, in Flax: data pipeline, model, training,
a fused CUDA symmetric-contraction kernel and a balanced multi-device data planner."""

from jax_gna.ffi_loader import CudaExtension, load_cuda_extension


def cuda_status() -> CudaExtension:
    """Whether the MACE CUDA extension is built, ABI-compatible and usable on a visible GPU."""
    return load_cuda_extension("jax_mace._mace_cuda")


__all__ = ["CudaExtension", "cuda_status"]
