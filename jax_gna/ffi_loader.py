"""Loads an optional CUDA extension module and registers its XLA FFI handlers with JAX.

Shared by :mod:`jax_gna` and :mod:`jax_mace`. The extension is optional: when it is missing,
built against a newer XLA FFI API than the running jaxlib, or there is no GPU, the status says so
and the pure-JAX paths are used. Forcing ``backend="cuda"`` then raises with that reason.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jax

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CudaExtension:
    """What is known about one optional CUDA extension module."""

    module_name: str
    available: bool
    reason: str
    targets: frozenset[str] = field(default_factory=frozenset)
    built_ffi_api: tuple[int, int] | None = None
    runtime_ffi_api: tuple[int, int] | None = None

    def has(self, target: str) -> bool:
        return self.available and target in self.targets


def runtime_ffi_api_version() -> tuple[int, int] | None:
    """The XLA FFI API ``(major, minor)`` of the running jaxlib, read from its shipped header."""
    try:
        header = Path(jax.ffi.include_dir()) / "xla" / "ffi" / "api" / "c_api.h"
        text = header.read_text()
    except (OSError, AttributeError):
        return None
    major = re.search(r"#define\s+XLA_FFI_API_MAJOR\s+(\d+)", text)
    minor = re.search(r"#define\s+XLA_FFI_API_MINOR\s+(\d+)", text)
    if not (major and minor):
        return None
    return int(major.group(1)), int(minor.group(1))


def gpu_present() -> bool:
    try:
        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False


@cache
def load_cuda_extension(module_name: str) -> CudaExtension:
    """Import ``module_name`` (e.g. ``"jax_gna._gna_cuda"``) and register its handlers for CUDA.

    Never raises: the returned status carries the reason when the extension cannot be used.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        return CudaExtension(
            module_name,
            False,
            f"the CUDA extension {module_name} was not built (install with JAXK_CUDA=ON; "
            f"see README): {err}",
        )
    built = tuple(module.ffi_api_version())
    runtime = runtime_ffi_api_version()
    if runtime is not None and (built[0] != runtime[0] or built[1] > runtime[1]):
        return CudaExtension(
            module_name,
            False,
            f"{module_name} was built against XLA FFI API {built[0]}.{built[1]} (jaxlib "
            f"{module.built_against_jaxlib}) but the running jaxlib {jax.__version__} has "
            f"{runtime[0]}.{runtime[1]}; rebuild it against this jax (pip install "
            f"--no-build-isolation ...)",
            built_ffi_api=built,
            runtime_ffi_api=runtime,
        )
    registrations = module.registrations()
    for name, capsule in registrations.items():
        jax.ffi.register_ffi_target(name, capsule, platform="CUDA")
    if not gpu_present():
        return CudaExtension(
            module_name,
            False,
            f"{module_name} is built but JAX sees no GPU "
            f"(default backend: {jax.default_backend()})",
            frozenset(registrations),
            built,
            runtime,
        )
    log.debug("registered %d FFI targets from %s", len(registrations), module_name)
    return CudaExtension(module_name, True, "ok", frozenset(registrations), built, runtime)
