"""The training loop: epochs of jitted steps, validation with EMA weights, checkpoints, test."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jax_mace.data import BatchCapacity, Graph, capacity_for, iterate_batches
from jax_mace.model import MACE
from jax_mace.serialization import save_model
from jax_mace.train.checkpoint import Checkpointer
from jax_mace.train.config import TrainConfig
from jax_mace.train.data import Datasets, load_datasets
from jax_mace.train.loss import METRIC_KEYS, summarize
from jax_mace.train.schedule import PlateauState, learning_rate, loss_weights
from jax_mace.train.steps import init_state, make_eval_step, make_optimizer, make_train_step


def evaluate(eval_step, params, graphs: list[Graph], batch_size: int, capacity: BatchCapacity):
    """MAE/RMSE over ``graphs`` (meV units, see :func:`~jax_mace.train.loss.summarize`)."""
    totals = dict.fromkeys(METRIC_KEYS, 0.0)
    for batch in iterate_batches(graphs, batch_size, capacity):
        sums = jax.device_get(eval_step(params, batch))
        for k in METRIC_KEYS:
            totals[k] += float(sums[k])
    return summarize(totals)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def train(cfg: TrainConfig, resume: bool = False, datasets: Datasets | None = None) -> dict:
    """Train as configured; returns (and writes to ``<output.dir>/results.json``) the learning
    curve, final validation/test metrics and wall times. The final EMA model is saved to
    ``<output.dir>/model`` (load with :func:`jax_mace.serialization.load_model`)."""
    opt = cfg.training
    if opt.matmul_precision:
        jax.config.update("jax_default_matmul_precision", opt.matmul_precision)
    t_start = time.perf_counter()
    r_max = float(cfg.model.get("r_max", 5.0))
    if datasets is None:
        datasets = load_datasets(cfg.data, r_max)
    t_data = time.perf_counter() - t_start
    model_cfg = cfg.model_config(datasets.z_table, datasets.statistics)
    model = MACE(model_cfg, rngs=nnx.Rngs(opt.seed))
    tx = make_optimizer(opt)
    graphdef, state = init_state(model, tx)
    compute_stress = opt.stress_weight > 0
    train_step = make_train_step(graphdef, opt, compute_stress)
    eval_step = make_eval_step(graphdef, compute_stress)
    train_cap = capacity_for(datasets.train, opt.batch_size)
    eval_graphs = datasets.valid + datasets.test
    eval_cap = capacity_for(eval_graphs or datasets.train, opt.eval_batch_size)
    steps_per_epoch = -(-len(datasets.train) // opt.batch_size)
    total_steps = opt.max_epochs * steps_per_epoch
    if opt.max_steps is not None:
        total_steps = min(total_steps, opt.max_steps)

    os.makedirs(cfg.output.dir, exist_ok=True)
    ckpt = None
    if cfg.output.checkpoints:
        ckpt_dir = os.path.join(cfg.output.dir, "checkpoints")
        ckpt = Checkpointer(ckpt_dir, cfg.output.keep_checkpoints)
    elif resume:
        raise ValueError(f"{cfg.source}: --resume needs output.checkpoints: true")
    history: list[dict] = []
    plateau = PlateauState()
    epoch, step_in_epoch, elapsed_before = 0, 0, 0.0
    if resume and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        epoch, step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        history, elapsed_before = meta["history"], meta["elapsed_s"]
        plateau = PlateauState(**meta["plateau"])

    def progress(step: int, elapsed: float) -> float:
        p = step / max(total_steps, 1)
        if opt.time_budget_s:
            p = max(p, elapsed / opt.time_budget_s)
        return p

    def checkpoint(step: int, elapsed: float) -> None:
        if ckpt is None:
            return
        meta = {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "history": history,
            "elapsed_s": elapsed,
            "plateau": dataclasses.asdict(plateau),
        }
        ckpt.save(step, state, meta)

    t_loop = time.perf_counter()
    step = int(state.step)
    stop_reason = "max_epochs"
    val_text = ""
    lr = opt.lr
    epochs_run = 0
    while epoch < opt.max_epochs:
        batches = list(
            iterate_batches(
                datasets.train,
                opt.batch_size,
                train_cap,
                shuffle=True,
                seed=_epoch_seed(opt.seed, epoch),
            )
        )
        batches = jax.device_put(batches)  # one transfer per epoch, not per step
        bar = tqdm(
            batches[step_in_epoch:],
            desc=f"epoch {epoch + 1}/{opt.max_epochs}",
            disable=not cfg.output.progress_bar,
            leave=False,
            dynamic_ncols=True,
        )
        stop = None
        t_epoch = time.perf_counter()
        steps_before = step
        for batch in bar:
            elapsed = elapsed_before + time.perf_counter() - t_loop
            p = progress(step, elapsed)
            lr = learning_rate(opt, step, p, plateau)
            weights = loss_weights(opt, p)
            state, loss, _ = train_step(state, batch, weights, np.float32(lr))
            step += 1
            step_in_epoch += 1
            if step % 10 == 0 or step_in_epoch == len(batches):
                bar.set_postfix_str(f"loss={float(loss):.4g} lr={lr:.2g}{val_text}")
            if opt.max_steps is not None and step >= opt.max_steps:
                stop = "max_steps"
            elif opt.time_budget_s and elapsed >= opt.time_budget_s:
                stop = "time_budget"
            if stop:
                break
        bar.close()
        jax.block_until_ready(state.step)
        epoch_s = time.perf_counter() - t_epoch
        epoch_done = step_in_epoch == len(batches)
        if epoch_done:
            epoch, step_in_epoch = epoch + 1, 0
            epochs_run += 1
            if (
                not stop
                and cfg.output.stop_after_epochs
                and epochs_run >= cfg.output.stop_after_epochs
                and epoch < opt.max_epochs
            ):
                stop = "stop_after_epochs"
        elapsed = elapsed_before + time.perf_counter() - t_loop
        if stop or (epoch_done and (epoch % opt.eval_every == 0 or epoch == opt.max_epochs)):
            entry = {
                "epoch": epoch + step_in_epoch / len(batches),
                "step": step,
                "elapsed_s": round(elapsed, 2),
                "epoch_s": round(epoch_s, 3),
                "steps_per_s": round((step - steps_before) / max(epoch_s, 1e-9), 2),
                "lr": lr,
            }
            if datasets.valid:
                val = evaluate(
                    eval_step, state.ema_params, datasets.valid, opt.eval_batch_size, eval_cap
                )
                entry["valid"] = val
                plateau.update(val["rmse_forces_mev"] + val["rmse_energy_mev"], opt)
                val_text = (
                    f" val E={val['mae_energy_mev']:.1f}meV F={val['mae_forces_mev']:.1f}meV/A"
                )
            if opt.test_every and epoch % opt.test_every == 0 and datasets.test:
                entry["test"] = evaluate(
                    eval_step, state.ema_params, datasets.test, opt.eval_batch_size, eval_cap
                )
            history.append(entry)
            tqdm.write(json.dumps(entry))
            with open(os.path.join(cfg.output.dir, "history.json"), "w") as f:
                json.dump(history, f, indent=1)
        if stop or (epoch_done and epoch % cfg.output.checkpoint_every == 0):
            checkpoint(step, elapsed)
        if stop:
            stop_reason = stop
            break
    else:
        if ckpt is not None and ckpt.latest_step() != step:
            checkpoint(step, elapsed_before + time.perf_counter() - t_loop)
    train_wall = elapsed_before + time.perf_counter() - t_loop
    if ckpt is not None:
        ckpt.close()

    final_model = nnx.merge(graphdef, state.ema_params)
    save_model(os.path.join(cfg.output.dir, "model"), final_model)
    results = {
        "stop_reason": stop_reason,
        "epochs": epoch,
        "steps": step,
        "train_wall_s": round(train_wall, 2),
        "data_prep_s": round(t_data, 2),
        "history": history,
        "num_train": len(datasets.train),
        "num_valid": len(datasets.valid),
        "num_test": len(datasets.test),
        "num_params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "statistics": datasets.statistics.to_dict(),
        "model_config": model_cfg.to_dict(),
        "train_config": cfg.to_dict(),
        "device": str(jax.devices()[0].device_kind),
        "jax_version": jax.__version__,
    }
    if datasets.valid:
        results["valid"] = evaluate(
            eval_step, state.ema_params, datasets.valid, opt.eval_batch_size, eval_cap
        )
    if datasets.test:
        t0 = time.perf_counter()
        results["test"] = evaluate(
            eval_step, state.ema_params, datasets.test, opt.eval_batch_size, eval_cap
        )
        results["test_eval_s"] = round(time.perf_counter() - t0, 2)
    results["total_wall_s"] = round(time.perf_counter() - t_start, 2)
    with open(os.path.join(cfg.output.dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results
