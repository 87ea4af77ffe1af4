"""Counts from Ray workers to the driver's ProgressFn (training steps: the loop runs in Ray Train workers).

A worker's output is a log file forwarded to the driver, never a terminal, so workers draw nothing:
rank 0 sends its step count to a small actor (``StepCounter``, no CPU, on the driver's node) and a
driver thread forwards each new count to the stage's ProgressFn, which draws a bar where the driver
has a terminal and logs otherwise. Reporting never fails training: a lost count is only a late bar.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from lift_core.progress import ProgressFn, count
from lift_core.train.callbacks import Callback

log = logging.getLogger("lift.progress")


class StepCounter:
    """The latest count a worker reported (a Ray actor)."""

    def __init__(self) -> None:
        self.value: int | None = None

    def put(self, value: int) -> None:
        self.value = value

    def get(self) -> int | None:
        return self.value


class ReportSteps(Callback):
    """Rank 0 sends each finished step (and the step a resume starts from) to the counter; fire and forget."""

    def __init__(self, counter: Any):
        self.counter = counter

    def on_train_start(self, ctx, start_step: int) -> None:
        if ctx.is_main:
            self.counter.put.remote(start_step)

    def on_step_end(self, ctx, row: dict[str, Any]) -> None:
        if ctx.is_main:
            self.counter.put.remote(int(row["step"]))


class StepRelay:
    """The steps of one training run, from rank 0 to ``progress`` as ``count(progress, step, total, "steps", note)``.

    ``callbacks`` go into the loop's config; ``with relay:`` around the run forwards each new count
    from a driver thread and removes the counter afterwards. Without ``progress`` it is inert."""

    def __init__(self, progress: ProgressFn | None, total: int, note: str = "training", interval_s: float = 0.5):
        self.progress, self.total, self.note, self.interval_s = progress, total, note, interval_s
        self.counter: Any = None
        self.callbacks: list[Callback] = []
        self._stop, self._thread, self._last = threading.Event(), None, None
        if progress is not None:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            self.counter = ray.remote(num_cpus=0, max_restarts=0)(StepCounter).options(scheduling_strategy=here).remote()
            self.callbacks = [ReportSteps(self.counter)]

    def forward(self, timeout: float) -> None:
        import ray

        try:
            value = ray.get(self.counter.get.remote(), timeout=timeout)
        except Exception as err:  # a busy or lost counter: the bar waits, training goes on
            log.debug("step counter unavailable: %s", err)
            return
        if value is not None and value != self._last:
            self._last = value
            try:
                count(self.progress, value, self.total, "steps", self.note)
            except Exception as err:  # a broken renderer or artifact API must not end the relay, nor training
                log.warning("progress report failed (%s: %s)", type(err).__name__, err)

    def _pump(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.forward(timeout=10.0)

    def __enter__(self) -> "StepRelay":
        if self.counter is not None:
            self._thread = threading.Thread(target=self._pump, name="lift-step-relay", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.counter is None:
            return
        import ray

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.forward(timeout=5.0)  # the last steps, reported after the pump's last look
        ray.kill(self.counter)
