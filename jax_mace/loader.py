"""Turn an :class:`~jax_mace.balance.EpochPlan` into padded, device-stacked batches, built on a
background thread so the accelerator never waits for the host.

Each step yields one pytree whose leaves carry a leading device axis: ``leaf[d]`` is the padded
batch of (local) device ``d``, all with the plan's static capacities. ``make_batch(indices,
capacities)`` builds one device batch from graph indices; it is generic (any pytree of arrays),
e.g. :func:`graph_batch_maker` for :class:`jax_mace.data.GraphBatch`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jax_mace.balance import EpochPlan

__all__ = ["PlanLoader", "graph_batch_maker", "stack_batches"]

MakeBatch = Callable[[np.ndarray, tuple[int, int, int]], Any]
_END = object()


def stack_batches(batches: Sequence[Any]) -> Any:
    """Stack same-shaped pytrees along a new leading (device) axis (NumPy, on the host)."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *batches)


def graph_batch_maker(graphs: Sequence[Any], pad: Callable | None = None) -> MakeBatch:
    """``make_batch`` for a list of :class:`jax_mace.data.Graph`: pads with ``pad`` (default
    :func:`jax_mace.data.pad_graphs`) to the plan's ``(n_node, n_edge, n_graph)``."""
    if pad is None:
        from jax_mace.data import pad_graphs as pad

    def make_batch(indices: np.ndarray, capacities: tuple[int, int, int]):
        return pad([graphs[i] for i in indices], *capacities)

    return make_batch


class PlanLoader:
    """Iterate over a plan's steps as device-stacked padded batches, prefetched on a thread.

    Args:
      plan: the epoch plan.
      make_batch: ``(graph indices [k], (n_node, n_edge, n_graph)) -> pytree`` for one device.
      devices: which of the plan's device slots this process feeds, as a ``range`` or sequence
        (multi-host: the global device positions of this process's devices); default all.
      prefetch: steps built ahead of the consumer (>= 1).
      put: applied to each stacked step on the background thread (e.g. a ``jax.device_put``
        onto a sharding, so the host-to-device copy also overlaps compute); default: none.

    The worker thread stops when the epoch ends, when ``close()`` is called, or when the loader
    is used as a context manager and the block exits. An exception in ``make_batch`` or ``put``
    is raised again in the consumer.
    """

    def __init__(
        self,
        plan: EpochPlan,
        make_batch: MakeBatch,
        *,
        devices: Sequence[int] | None = None,
        prefetch: int = 2,
        put: Callable[[Any], Any] | None = None,
    ) -> None:
        if not isinstance(plan, EpochPlan):
            raise ValueError(f"plan must be an EpochPlan, got {type(plan).__name__}")
        if not callable(make_batch):
            raise ValueError("make_batch must be callable (indices, capacities) -> pytree")
        if int(prefetch) != prefetch or prefetch < 1:
            raise ValueError(f"prefetch must be an integer >= 1, got {prefetch}")
        self.devices = list(range(plan.num_devices)) if devices is None else list(devices)
        if not self.devices or any(
            int(d) != d or not 0 <= d < plan.num_devices for d in self.devices
        ):
            raise ValueError(
                f"devices must be non-empty positions in [0, {plan.num_devices}), got {devices}"
            )
        self.plan, self.make_batch, self.prefetch, self.put = plan, make_batch, int(prefetch), put
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue | None = None

    def __len__(self) -> int:
        return self.plan.num_steps

    def build_step(self, step: int) -> Any:
        """The stacked batch of one step, built on the calling thread."""
        caps = self.plan.capacities
        batches = [self.make_batch(self.plan.batch(step, d), caps) for d in self.devices]
        return stack_batches(batches)

    def _offer(self, q: queue.Queue, item: Any) -> bool:
        """Put ``item`` unless stopped meanwhile; False if stopped."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, q: queue.Queue) -> None:
        try:
            for s in range(self.plan.num_steps):
                item = self.build_step(s)
                if self.put is not None:
                    item = self.put(item)
                if not self._offer(q, item):
                    return
            self._offer(q, _END)
        except BaseException as exc:  # handed to the consumer
            self._offer(q, exc)

    def __iter__(self) -> Iterator[Any]:
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._thread = threading.Thread(target=self._work, args=(self._queue,), daemon=True)
        self._thread.start()
        return self._consume(self._queue)

    def _consume(self, q: queue.Queue) -> Iterator[Any]:
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker thread (if running) and drop prefetched steps."""
        self._stop.set()
        if self._queue is not None:
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> PlanLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
