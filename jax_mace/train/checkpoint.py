"""Orbax checkpoints of the train state plus JSON metadata (epoch, history, schedule state)."""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from jax_mace.serialization import flatten_params, unflatten_params


class Checkpointer:
    """Saves ``{flat train state}`` + metadata under ``directory/<step>``; keeps the newest few."""

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        flat = {k: np.asarray(v) for k, v in flatten_params(state).items()}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, template, step: int | None = None):
        """``(state shaped like template, meta)`` of ``step`` (default: the latest)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to resume from")
        abstract = {k: np.asarray(v) for k, v in flatten_params(template).items()}
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        state = unflatten_params(template, dict(out["state"]), where=f"{self.directory}/{step}")
        return jax.tree.map(jax.numpy.asarray, state), dict(out["meta"])

    def close(self) -> None:
        self.manager.close()
