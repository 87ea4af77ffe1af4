"""``Stages``: the declared stages bound to one run's config, so flows read as recipes.

``Stages`` submits each stage as its Prefect task (cached on the stage key, retried, with the run's
result storage) and returns at once with a ``StageFuture``. A stage starts when the stages whose
outputs it takes have finished: its key hashes the content of those outputs, so it is computed then.
Stages that do not depend on each other run side by side (``train-critic`` and ``generate-base-train``
in ``lift-full``), in the flow's task runner and within the GPU concurrency limit (``tasks.common``:
``gpu_slots``). Indexing a ``StageFuture`` (``critic["outputs"]["adapter"]``) gives a reference to that
part of its result, which a later stage waits for; ``result()`` waits now. ``wait()`` waits for every
stage of the run and raises the error of the first one that failed; each finished task's state
(``Cached`` or ``Completed``) is kept for the run summary.

``InlineStages`` runs the same stage functions one after the other in this process, without Prefect
(the ``lift`` CLI): each method returns the stage's result, and a finished stage is found by its
``_SUCCESS.json``.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from dataclasses import dataclass
from typing import Any

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.progress import ProgressFn
from lift_core.stages import get_stage


class UpstreamFailed(RuntimeError):
    """A stage that did not run because a stage whose output it takes failed (that stage's error is the cause)."""


class StageFuture:
    """A submitted stage: ``result()`` waits for its ``StageResult`` dict (or raises its error)."""

    def __init__(self, label: str):
        self.label = label
        self._future: concurrent.futures.Future = concurrent.futures.Future()  # the launcher's, set on submission
        self.task_future: Any = None  # the Prefect future of its task run, once submitted

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)

    def __getitem__(self, key: Any) -> "Ref":
        return Ref(self, (key,))

    __iter__ = None  # indexing gives references, not items: not iterable

    def __repr__(self) -> str:
        return f"StageFuture({self.label!r}, done={self.done()})"


@dataclass(frozen=True)
class Ref:
    """A part of a submitted stage's result (``future["outputs"]["frames"]``), known once it finished."""

    source: StageFuture
    path: tuple[Any, ...]

    def __getitem__(self, key: Any) -> "Ref":
        return Ref(self.source, (*self.path, key))

    __iter__ = None  # not iterable: ``result()`` gives the value

    def result(self) -> Any:
        value: Any = self.source.result()
        for key in self.path:
            value = value[key]
        return value


def _sources(value: Any) -> list[StageFuture]:
    """The submitted stages that ``value`` (an input: a reference, or lists and dicts of them) waits for."""
    if isinstance(value, StageFuture):
        return [value]
    if isinstance(value, Ref):
        return [value.source]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        found: list[StageFuture] = []
        for v in value:
            found += [s for s in _sources(v) if all(s is not f for f in found)]
        return found
    return []


def _resolved(value: Any) -> Any:
    """``value`` with every reference replaced by what it refers to (the stages must have finished)."""
    if isinstance(value, (StageFuture, Ref)):
        return value.result()
    if isinstance(value, dict):
        return {k: _resolved(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolved(v) for v in value)
    return value


class Stages:
    def __init__(self, cfg: dict[str, Any] | PipelineConfig):
        self.cfg = cfg if isinstance(cfg, PipelineConfig) else PipelineConfig.model_validate(cfg)
        self.states: dict[str, str] = {}  # label -> final state of this run's task run
        self.results: dict[str, dict[str, Any]] = {}  # label -> StageResult dict
        self.stage_of: dict[str, str] = {}  # label -> stage name, in the order the stages were submitted
        self._futures: dict[str, StageFuture] = {}
        self._launcher: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _run(self, stage: str, label: str, **inputs: Any) -> Any:
        """Submit ``stage`` as its Prefect task once the stages it takes outputs from have finished.

        Returns a ``StageFuture`` now. A launcher thread waits for the inputs, computes the stage key
        (the task's cache key) and output folder, submits the task to the flow's task runner and waits
        for its final state.
        """
        from tasks.common import result_storage

        get_stage(stage)  # an unknown stage fails here, in the flow
        result_storage(self.cfg)  # a remote root saves its result-storage block once: in the flow's thread
        with self._lock:
            if self._launcher is None:
                # A thread per stage: a launcher mostly waits (for its inputs, then for its task run).
                self._launcher = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="lift-stage")
            self.stage_of[label] = stage
            # The flow run's context (its task runner, client and settings) goes with the launcher.
            context = contextvars.copy_context()
            future = StageFuture(label)
            future._future = self._launcher.submit(context.run, self._launch, future, stage, label, inputs)
            self._futures[label] = future
        return future

    def _launch(self, future: StageFuture, stage: str, label: str, inputs: dict[str, Any]) -> dict[str, Any]:
        from tasks.common import for_run
        from tasks.stage_task import stage_task

        upstream = _sources(inputs)
        for source in upstream:
            try:
                source.result()
            except BaseException as err:
                raise UpstreamFailed(f"{label} did not run: {source.label} failed ({type(err).__name__}: {err})") from err
        inputs = _resolved(inputs)
        key, out_dir = get_stage(stage).stage_out(self.cfg, **inputs)
        task = stage_task(stage)
        if storage.check_success(out_dir)[0] is None:
            # The folder is the truth: a stage whose outputs are gone or no longer match its
            # _SUCCESS.json runs again (and repairs them), even when Prefect's cache holds its result.
            task = task.with_options(refresh_cache=True)
        task = for_run(task, self.cfg)
        # wait_for: the UI draws the edges from the upstream task runs (they have finished already).
        waited = [s.task_future for s in upstream if s.task_future is not None]
        future.task_future = task.submit(self.cfg.model_dump(mode="json"), stage=stage, label=label, inputs=inputs,
                                         key=key, out_dir=out_dir, wait_for=waited or None)
        future.task_future.wait()
        state = future.task_future.state
        with self._lock:
            self.states[label] = state.name
        return self._record(stage, label, state.result())  # raises the stage's error when the task failed

    def _record(self, stage: str, label: str, result: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.stage_of[label] = stage
            self.results[label] = result
        return result

    def wait(self) -> dict[str, dict[str, Any]]:
        """Wait for every submitted stage; returns ``results`` (in submission order).

        A failed stage stops the stages that take its outputs; the others run to their end (what they
        wrote is there for the rerun). Then the error of the first failed stage is raised: a stage's
        own error, not the ``UpstreamFailed`` of the stages after it.
        """
        with self._lock:
            futures = list(self._futures.values())
        concurrent.futures.wait([f._future for f in futures])
        with self._lock:
            self.results = {label: self.results[label] for label in self.stage_of if label in self.results}
            if self._launcher is not None and all(f.done() for f in self._futures.values()):
                self._launcher.shutdown(wait=False)
                self._launcher = None
        errors = [err for f in futures if (err := f.exception()) is not None]
        if errors:
            raise next((e for e in errors if not isinstance(e, UpstreamFailed)), errors[0])
        return self.results

    # ----------------------------------------------------------------------- the stages
    def synth(self) -> Any:
        return self._run("synth", "synth")

    def ingest(self, synth: Any) -> Any:
        return self._run("ingest", "ingest", synth_outputs=synth["outputs"] if synth else None)

    def decode(self, manifest_uri: Any, label: str = "decode") -> Any:
        return self._run("decode", label, manifest_uri=manifest_uri)

    def train_critic(self, manifest_uri: Any, frames_uri: Any) -> Any:
        return self._run("train_critic", "train-critic", manifest_uri=manifest_uri, frames_uri=frames_uri)

    def generate(self, prompts_uri: Any, split: str = "train", lora_uri: Any = None, tag: str = "base") -> Any:
        return self._run("generate", f"generate-{tag}-{split}", prompts_uri=prompts_uri, split=split,
                         lora_uri=lora_uri, tag=tag)

    def score(self, manifest_uris: list[Any], frames_uris: list[Any], adapter_uri: Any) -> Any:
        return self._run("score", "score", manifest_uris=manifest_uris, frames_uris=frames_uris,
                         adapter_uri=adapter_uri)

    def align(self, scores_uri: Any, manifest_uris: list[Any]) -> Any:
        return self._run("align", "align", scores_uri=scores_uri, manifest_uris=manifest_uris)

    def evaluate(self, prompts_uri: Any, adapter_uri: Any, align_outputs: Any) -> Any:
        return self._run("evaluate", "evaluate", prompts_uri=prompts_uri, adapter_uri=adapter_uri,
                         align_outputs=align_outputs)

    # ----------------------------------------------------------------------- shared chains
    def prepare_data(self) -> dict[str, Any]:
        """synth (when the config renders demo data) -> ingest -> decode: ``manifest``, ``prompts``, ``frames``
        (URIs from ``InlineStages``; references to them, known once the stage finished, from ``Stages``)."""
        synth = self.synth() if self.cfg.data.synthetic is not None else None
        ingested = self.ingest(synth)
        frames = self.decode(ingested["outputs"]["manifest"])
        return {"manifest": ingested["outputs"]["manifest"], "prompts": ingested["outputs"]["prompts"],
                "frames": frames["outputs"]["frames"]}

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per task of this run: its stage, state, stage key, main counts, primary output and folder."""
        self.wait()
        rows = []
        for label, result in self.results.items():
            counts = ", ".join(f"{k}={v}" for k, v in sorted(result["counts"].items())[:5])
            primary = next(iter(result["outputs"].values()), "")
            rows.append({"task": label, "stage": self.stage_of[label], "state": self.states.get(label, ""),
                         "key": result["key"], "counts": counts, "output": primary, "folder": result["out_uri"]})
        return rows


class InlineStages(Stages):
    """The same stages called one after the other in this process, without Prefect: no task cache, no
    artifacts, no GPU slots. Each method returns the stage's result."""

    def __init__(self, cfg: dict[str, Any] | PipelineConfig, progress: ProgressFn | None = None):
        super().__init__(cfg)
        self.progress = progress

    def _run(self, stage: str, label: str, **inputs: Any) -> dict[str, Any]:
        # A renderer per stage (lift_core.progress.TerminalProgress): its own bar and label.
        progress = self.progress.for_stage(label) if hasattr(self.progress, "for_stage") else self.progress
        result = get_stage(stage)(self.cfg, progress=progress, **inputs)
        return self._record(stage, label, result.to_dict())
