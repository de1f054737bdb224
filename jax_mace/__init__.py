"""MACE, the equivariant interatomic potential, in Flax: data pipeline, model, training,
a fused CUDA symmetric-contraction kernel and a balanced multi-device data planner."""

import importlib

from jax_gna.ffi_loader import CudaExtension, load_cuda_extension


def cuda_status() -> CudaExtension:
    """Whether the MACE CUDA extension is built, ABI-compatible and usable on a visible GPU."""
    return load_cuda_extension("jax_mace._mace_cuda")


# Public names re-exported lazily, so `import jax_mace` stays light (no flax/e3nn import).
_LAZY = {
    "MACE": "jax_mace.model",
    "MACEConfig": "jax_mace.model",
    "predict": "jax_mace.model",
    "preset": "jax_mace.model",
    "Graph": "jax_mace.data",
    "GraphBatch": "jax_mace.data",
    "pad_graphs": "jax_mace.data",
    "graph_sizes": "jax_mace.data",
    "read_configurations": "jax_mace.data",
    "PathList": "jax_mace.symmetric_contraction",
    "build_path_list": "jax_mace.symmetric_contraction",
    "symmetric_contraction": "jax_mace.symmetric_contraction",
    "SymmetricContraction": "jax_mace.symmetric_contraction",
    "save_model": "jax_mace.serialization",
    "load_model": "jax_mace.serialization",
    "MACECalculator": "jax_mace.calculator",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jax_mace' has no attribute {name!r}")


__all__ = ["CudaExtension", "cuda_status", *_LAZY]
