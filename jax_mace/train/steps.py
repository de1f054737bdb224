"""Train state, optimizer, and the jitted train / evaluation steps."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jax_mace.data.graph import GraphBatch
from jax_mace.model import MACE, predict
from jax_mace.train.config import OptimConfig
from jax_mace.train.loss import loss_and_sums


@struct.dataclass
class TrainState:
    """Everything that evolves during training (a pytree; checkpointed as a whole)."""

    params: nnx.State
    opt_state: optax.OptState
    ema_params: nnx.State
    step: jax.Array


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """Clipping then AMSGrad/Adam scaling; the learning rate is applied in the step."""
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.optimizer == "amsgrad":
        parts.append(optax.scale_by_amsgrad(b1=cfg.beta1, b2=cfg.beta2))
    elif cfg.optimizer == "adam":
        parts.append(optax.scale_by_adam(b1=cfg.beta1, b2=cfg.beta2))
    else:
        raise ValueError(f"training.optimizer must be 'amsgrad' or 'adam', got {cfg.optimizer!r}")
    return optax.chain(*parts)


def init_state(model: MACE, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params = nnx.split(model)
    state = TrainState(
        params=params,
        opt_state=tx.init(params),
        ema_params=params,
        step=jnp.zeros((), jnp.int32),
    )
    return graphdef, state


def make_train_step(graphdef: nnx.GraphDef, cfg: OptimConfig, compute_stress: bool) -> Callable:
    """``step(state, batch, weights, lr) -> (state, loss, sums)``, jitted.

    Cached on the settings it depends on, so runs with the same model structure and optimizer
    (e.g. a resumed run in the same process) reuse one compiled step.
    """
    return _train_step(
        graphdef,
        cfg.optimizer,
        cfg.clip_norm,
        cfg.beta1,
        cfg.beta2,
        cfg.ema_decay,
        compute_stress,
    )


@functools.lru_cache(maxsize=8)
def _train_step(graphdef, optimizer, clip_norm, beta1, beta2, ema_decay, compute_stress):
    tx = make_optimizer(
        OptimConfig(optimizer=optimizer, clip_norm=clip_norm, beta1=beta1, beta2=beta2)
    )

    def loss_fn(params, batch, weights):
        pred = predict(nnx.merge(graphdef, params), batch, compute_stress, include_e0=False)
        return loss_and_sums(pred, batch, weights)

    @jax.jit
    def step(state: TrainState, batch: GraphBatch, weights, lr):
        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, weights
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
        if ema_decay is None:
            ema = params
        else:
            t = state.step.astype(jnp.float32)
            decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
            ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, params)
        new = TrainState(params=params, opt_state=opt_state, ema_params=ema, step=state.step + 1)
        return new, loss, sums

    return step


@functools.lru_cache(maxsize=8)
def make_eval_step(graphdef: nnx.GraphDef, compute_stress: bool) -> Callable:
    """``eval(params, batch) -> (loss-free) error sums`` and predictions, jitted."""
    unit = {"energy": 1.0, "forces": 1.0, "stress": 1.0}

    @jax.jit
    def evaluate(params, batch: GraphBatch):
        pred = predict(nnx.merge(graphdef, params), batch, compute_stress, include_e0=False)
        _, sums = loss_and_sums(pred, batch, unit)
        return sums

    return evaluate
