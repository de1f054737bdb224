"""Data-parallel training over devices with ``shard_map``: one padded batch per device, losses
and gradients normalised by the real counts summed over all devices.

Contract of ``loss_fn(params, batch) -> (sums, counts)`` (one device batch, unstacked):

- ``sums``: a pytree of scalars, each a loss *summed* over the real (unmasked) entries of the
  batch, with its weight folded in (e.g. ``w_E * sum_graphs (dE / n_atoms)^2``);
- ``counts``: a pytree of the same structure, the number of real entries each sum runs over
  (e.g. real graphs with an energy label; 3 x real atoms with forces).

The global loss is ``sum_k psum(sums[k]) / psum(counts[k])`` (a term whose global count is 0
contributes 0), i.e. exactly the loss of one big batch holding every graph of the step,
whatever the split between devices; the gradient is that of the global loss. This module is
independent of the model: any pytree batch with a leading device axis works.

Multi-host: call ``jax.distributed.initialize()`` first, build the mesh over ``jax.devices()``
(:func:`data_mesh`), feed this process's devices (:func:`local_device_positions`) from the plan,
and assemble the global batch with :func:`shard_batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "data_mesh",
    "local_device_positions",
    "mace_loss_fn",
    "make_loss_and_grad",
    "make_train_step",
    "shard_batch",
]

LossFn = Callable[[Any, Any], tuple[Any, Any]]


def data_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = "data") -> Mesh:
    """1-D mesh over ``devices`` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must be a non-empty sequence of jax devices")
    return Mesh(np.array(devices), (axis_name,))


def local_device_positions(mesh: Mesh) -> list[int]:
    """Positions (plan device slots) of this process's devices along the mesh axis."""
    return [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]


def shard_batch(stacked: Any, mesh: Mesh, axis_name: str | None = None) -> Any:
    """Global arrays from this process's stacked batches (leading axis = its local devices, in
    :func:`local_device_positions` order), sharded one batch per device."""
    axis = mesh.axis_names[0] if axis_name is None else axis_name
    sharding = NamedSharding(mesh, P(axis))
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), stacked
    )


def _check_structures(sums: Any, counts: Any) -> None:
    if jax.tree.structure(sums) != jax.tree.structure(counts):
        raise ValueError(
            "loss_fn must return (sums, counts) with the same pytree structure, got "
            f"{jax.tree.structure(sums)} and {jax.tree.structure(counts)}"
        )


def make_loss_and_grad(loss_fn: LossFn, mesh: Mesh, axis_name: str | None = None) -> Callable:
    """``fn(params, batch) -> (loss, grads, info)`` over the devices of ``mesh``.

    ``batch`` leaves have a leading axis of size ``mesh.size`` (one batch per device);
    ``params`` are replicated. ``loss`` and ``grads`` are the globally normalised loss and its
    gradient (replicated); ``info = {"terms": per-term normalised losses, "counts": global
    counts}``. Not jitted: call it inside ``jax.jit``.
    """
    axis = mesh.axis_names[0] if axis_name is None else axis_name

    def local(params, batch):
        batch = jax.tree.map(lambda x: x[0], batch)  # this device's batch

        def objective(p):
            sums, counts = loss_fn(p, batch)
            _check_structures(sums, counts)
            total = jax.tree.map(
                lambda c: jax.lax.psum(jax.lax.stop_gradient(jnp.asarray(c, jnp.float32)), axis),
                counts,
            )
            terms = jax.tree.map(
                lambda s, c: jnp.where(c > 0, s / jnp.maximum(c, 1.0), 0.0), sums, total
            )
            return sum(jax.tree.leaves(terms)), (terms, total)

        # Differentiate a per-device copy of the parameters: local gradients, summed explicitly.
        local_params = jax.lax.pcast(params, axis, to="varying")
        (value, (terms, total)), grads = jax.value_and_grad(objective, has_aux=True)(local_params)
        loss = jax.lax.psum(value, axis)
        grads = jax.lax.psum(grads, axis)
        terms = jax.lax.psum(terms, axis)
        return loss, grads, {"terms": terms, "counts": total}

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis)), out_specs=(P(), P(), P()))


def make_train_step(
    loss_fn: LossFn,
    optimizer,
    mesh: Mesh,
    axis_name: str | None = None,
    *,
    donate: bool = True,
) -> Callable:
    """Jitted ``step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    ``optimizer`` is an optax ``GradientTransformation``; ``metrics`` holds ``loss``, the
    per-term losses and global counts, and the gradient norm. With ``donate`` the old params and
    optimizer state buffers are reused.
    """
    import optax

    loss_and_grad = make_loss_and_grad(loss_fn, mesh, axis_name)
    replicated = NamedSharding(mesh, P())

    def step(params, opt_state, batch):
        loss, grads, info = loss_and_grad(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **info}
        return params, opt_state, metrics

    return jax.jit(
        step,
        donate_argnums=(0, 1) if donate else (),
        out_shardings=(replicated, replicated, replicated),
    )


def mace_loss_fn(graphdef, weights: dict[str, float], compute_stress: bool = False) -> LossFn:
    """The MACE training loss (:func:`jax_mace.train.loss.loss_and_sums`:
    ``w_E mean((dE/n)^2) + w_F mean(dF^2) [+ w_S mean(dS^2)]``) in the ``(sums, counts)`` form,
    so that :func:`make_train_step` averages it over all graphs of a step on all devices.

    ``graphdef``: the NNX graph definition of the model (``nnx.split``); ``params`` passed to the
    step are the matching state. ``weights``: ``{"energy", "forces"[, "stress"]}``.
    """
    from flax import nnx

    from jax_mace.model import predict
    from jax_mace.train.loss import loss_and_sums

    def loss_fn(params, batch):
        pred = predict(nnx.merge(graphdef, params), batch, compute_stress, include_e0=False)
        _, s = loss_and_sums(pred, batch, weights)
        sums = {
            "energy": weights["energy"] * s["energy_per_atom_sq"],
            "forces": weights["forces"] * s["forces_sq"],
        }
        counts = {"energy": s["energy_count"], "forces": s["forces_count"]}
        if compute_stress:
            sums["stress"] = weights["stress"] * s["stress_sq"]
            counts["stress"] = s["stress_count"]
        return sums, counts

    return loss_fn
