"""The one distributed training loop. Recipes supply the model, the batch, the loss and the outputs.

Per optimizer step ``s`` the loop:

1. takes the global batch ``positions s*B .. s*B+B-1`` of the training stream and splits it over
   ``world`` workers and ``grad_accum_steps`` micro-batches (micro-batch ``k`` of rank ``r`` holds
   positions ``s*B + (k*world + r)*m + [0, m)``). A recipe maps a position to an example and its
   randomness, so the data depends only on the position: a run resumes exactly under any world size;
2. asks the recipe for each micro-batch's share of the loss divisor (``normalizer``: tokens, samples),
   all-reduces the total ``N`` and backpropagates ``sum_loss * world / N`` per micro-batch (DDP
   averages gradients over ``world``), so accumulation and the world size leave the step unchanged;
3. clips the gradient norm, steps AdamW and the LR schedule, and logs one train-log row of global
   figures (the recipe's stat sums, all-reduced);
4. checkpoints every ``checkpoint_every`` steps and at the end (``lift_core.train.checkpoints``).

Trainable parameters are kept in fp32; ``mixed_precision: bf16`` runs forward and backward under
autocast. Gradient checkpointing is switched on through the model's own API (transformers or diffusers).
Under Ray Train (``fit``) workers use gloo on CPU and NCCL on GPU; tests may call ``run_worker``
in-process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import pyarrow as pa

from lift_core import storage
from lift_core.config import PipelineConfig, TrainConfig
from lift_core.progress import ProgressFn
from lift_core.train import checkpoints
from lift_core.train.callbacks import Callback
from lift_core.train.schedules import make_optimizer, make_scheduler

log = logging.getLogger("lift.train")

# Columns the loop owns; a recipe's columns go between ``step`` and these.
LOOP_COLUMNS = [
    ("lr", pa.float64()),
    ("grad_norm", pa.float64()),  # before clipping
    ("samples_seen", pa.int64()),
    ("world_size", pa.int32()),
    ("step_time_s", pa.float64()),
]


# TrainConfig fields that decide how a run executes, not what it computes: left out of stage keys, so a
# rerun with another world size, accumulation or checkpoint cadence finds and resumes the same run.
EXECUTION_TRAIN_FIELDS = {"num_workers", "use_gpu", "run_name", "checkpoint_every", "grad_accum_steps",
                          "gradient_checkpointing"}


# Fields of a training section (beside its TrainConfig's) that only say how a run executes.
EXECUTION_SECTION_FIELDS = {"cpus_per_worker", "max_failures", "keep_checkpoints"}


def decisive_training_values(values: dict[str, Any]) -> dict[str, Any]:
    """A training section's values (``model_dump``) without what only says how it executes: what a
    build record or stage key keeps, so another world size or CPU count resumes the same run."""
    out = {}
    for k, v in values.items():
        if k in EXECUTION_SECTION_FIELDS:
            continue
        if isinstance(v, dict) and {"max_steps", "batch_size"} <= set(v):  # a TrainConfig
            v = {kk: vv for kk, vv in v.items() if kk not in EXECUTION_TRAIN_FIELDS}
        out[k] = v
    return out


def training_fingerprint(section: Any, execution_fields: set[str], *salt: Any) -> str:
    """Hash of a training stage's config section without its execution-only fields."""
    values = section.model_dump(mode="json", exclude=set(getattr(section, "LOCATION_FIELDS", ())))
    for k in execution_fields:
        values.pop(k, None)
    for k in EXECUTION_TRAIN_FIELDS:
        values["train"].pop(k, None)
    return storage.hash_parts(*salt, values)


class LoopSettings(TrainConfig):
    """How a run trains: a stage's ``TrainConfig`` plus how its workers execute."""

    cpus_per_worker: float = 1.0
    max_failures: int = 0  # Ray Train restarts of the worker group (each resumes from the last checkpoint)
    keep_checkpoints: int = 2

    @classmethod
    def for_stage(cls, section: Any, train: TrainConfig | None = None) -> "LoopSettings":
        """From a training stage's config section (``critic``, ``align``, a pre-training section): its
        ``train`` (or the ``train`` given) and its execution fields."""
        return cls(**(train or section.train).model_dump(), cpus_per_worker=section.cpus_per_worker,
                   max_failures=section.max_failures, keep_checkpoints=section.keep_checkpoints)

    def micro_batch(self, world: int, section: str = "train") -> int:
        """Samples per worker per micro-batch; raises, naming the keys and the fix, when the global batch
        does not split evenly (``lift plan`` and every training run share this one check)."""
        parts = world * self.grad_accum_steps
        if self.batch_size % parts:
            fits = [a for a in range(1, self.batch_size + 1) if self.batch_size % (world * a) == 0]
            fix = (f"set {section}.grad_accum_steps to one of {fits[:6]}" if fits else
                   f"make {section}.batch_size a multiple of {section}.num_workers ({world}) x grad_accum_steps")
            raise ValueError(f"{section}.batch_size={self.batch_size} (global) must divide evenly over "
                             f"{section}.num_workers={world} x {section}.grad_accum_steps={self.grad_accum_steps}: "
                             f"{fix}")
        return self.batch_size // parts


@dataclass
class TrainModel:
    """What a recipe builds on each worker."""

    module: Any  # the trained module that forward runs through (DDP wraps it when world > 1)
    param_groups: list[dict[str, Any]]  # AdamW groups; a group's ``start_step`` delays its schedule
    trainable_state: Callable[[], dict[str, Any]]  # the weights a checkpoint holds
    load_trainable_state: Callable[[dict[str, Any]], None]
    handles: dict[str, Any] = field(default_factory=dict)  # the recipe's own objects (pipeline, processor, ...)


@dataclass
class WorkerContext:
    cfg: PipelineConfig
    config: dict[str, Any]  # the loop config every worker receives (``fit``'s ``config``)
    settings: LoopSettings
    rank: int
    world: int
    device: Any
    out_uri: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        import torch

        if self.settings.mixed_precision == "no":
            return contextlib.nullcontext()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.settings.mixed_precision]
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)


class Recipe(Protocol):
    """The part of a training run that is the recipe's own (see ``lift_core.critic.train``)."""

    log_columns: list[tuple[str, pa.DataType]]  # its train-log columns (between ``step`` and LOOP_COLUMNS)

    def build(self, ctx: WorkerContext) -> TrainModel: ...

    def make_batch(self, ctx: WorkerContext, model: TrainModel, positions: Sequence[int]) -> Any: ...

    def normalizer(self, batch: Any) -> float:
        """This micro-batch's share of the loss divisor (answer tokens, samples, ...)."""

    def loss(self, ctx: WorkerContext, model: TrainModel, net: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        """(summed loss of the micro-batch, stat sums to all-reduce for the log)."""

    def log_row(self, stats: dict[str, float]) -> dict[str, float]:
        """The recipe's train-log columns from the global stat sums of one step."""

    def finalize(self, ctx: WorkerContext, model: TrainModel, log_rows: list[dict[str, Any]]) -> None:
        """Rank 0, after the last step: write the recipe's outputs."""


def log_schema(recipe: Recipe) -> pa.Schema:
    return pa.schema([("step", pa.int64()), *recipe.log_columns, *LOOP_COLUMNS])


def enable_gradient_checkpointing(module: Any) -> None:
    """Recompute activations in backward, through the model's own API."""
    inner = getattr(module, "get_base_model", lambda: module)()
    if hasattr(inner, "gradient_checkpointing_enable"):  # transformers
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(inner, "enable_gradient_checkpointing"):  # diffusers
        inner.enable_gradient_checkpointing()
    else:
        raise ValueError(f"{type(inner).__name__} has no gradient checkpointing API")


def model_order(module: Any, param_groups: Sequence[dict[str, Any]]) -> list[Any]:
    """The groups' parameters in the order of ``module.parameters()`` (any not in the module after them).

    Gradient clipping sums the per-parameter norms in this order, so the total norm, and with it every
    clipped step, does not depend on how a recipe groups its parameters for AdamW. (The critic recipe
    puts its LoRA group first: summing in that order moved the demo's first norm by one float32 ulp
    against the model order of the critic loop before the refactor, and training amplifies an ulp into
    another run within a few hundred steps.)"""
    grouped = {id(p): p for g in param_groups for p in g["params"]}
    ordered = [p for p in module.parameters() if grouped.pop(id(p), None) is not None]
    return ordered + list(grouped.values())


def _all_reduce(t: Any, world: int) -> Any:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def run_worker(recipe: Recipe, config: dict[str, Any], rank: int = 0, world: int = 1, device: Any = "cpu",
               report: Callable[[dict[str, Any]], None] | None = None,
               wrap: Callable[[Any], Any] | None = None) -> None:
    """The loop on one worker. ``config`` holds ``cfg`` (the pipeline config), ``settings`` (LoopSettings),
    ``out_uri`` and the recipe's own keys; ``wrap`` makes the DDP module when ``world > 1``."""
    import torch

    settings: LoopSettings = config["settings"]
    cfg = PipelineConfig.model_validate(config["cfg"])
    m = settings.micro_batch(world, config.get("section", "train"))
    torch.set_num_threads(max(1, int(settings.cpus_per_worker)))
    torch.manual_seed(settings.seed)
    ctx = WorkerContext(cfg, config, settings, rank, world, torch.device(device), config["out_uri"])
    callbacks: list[Callback] = list(config.get("callbacks") or [])
    report = report or (lambda metrics: None)
    schema = log_schema(recipe)

    model = recipe.build(ctx)
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(model.module)
    resume = checkpoints.read_newest_intact(ctx.out_uri)
    start, log_rows = 0, []
    if resume is not None:
        model.load_trainable_state(resume.weights)
        start, log_rows = resume.step, resume.train_log
        log.info("resuming from step %d (%s)", start, resume.uri)
    else:
        log.info("starting from step 0 (no intact checkpoint in %s)", checkpoints.checkpoints_dir(ctx.out_uri))
    params = model_order(model.module, model.param_groups)
    for p in params:  # trainable weights stay in fp32 whatever the base model's dtype
        if p.dtype != torch.float32:
            p.data = p.data.float()
    model.module.to(ctx.device)
    model.module.train()
    net = wrap(model.module) if (wrap is not None and world > 1) else model.module
    optimizer = make_optimizer(model.param_groups, settings.lr, settings.betas, settings.weight_decay)
    scheduler = make_scheduler(optimizer, model.param_groups, settings.warmup_steps, settings.max_steps,
                               settings.lr_schedule)
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
    for cb in callbacks:
        cb.on_train_start(ctx, start)

    B, A = settings.batch_size, settings.grad_accum_steps
    for step in range(start, settings.max_steps):
        for cb in callbacks:
            cb.on_step_start(ctx, step + 1)
        t0 = time.perf_counter()
        batches = [recipe.make_batch(ctx, model, [step * B + (k * world + rank) * m + j for j in range(m)])
                   for k in range(A)]
        total = _all_reduce(torch.tensor([float(sum(recipe.normalizer(b) for b in batches))],
                                         dtype=torch.float64), world)
        optimizer.zero_grad(set_to_none=True)
        stats: dict[str, Any] = {}
        for k, batch in enumerate(batches):
            sync = contextlib.nullcontext() if (k == A - 1 or net is model.module) else net.no_sync()
            with sync:
                with ctx.autocast():
                    loss_sum, sums = recipe.loss(ctx, model, net, batch)
                (loss_sum.float() * (world / float(total[0]))).backward()
            for key, value in sums.items():
                stats[key] = stats.get(key, 0.0) + torch.as_tensor(value).detach().double().cpu()
        grad_norm = (torch.nn.utils.clip_grad_norm_(params, settings.grad_clip) if settings.grad_clip > 0
                     else torch.tensor(0.0))
        lr = float(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        keys = sorted(stats)
        reduced = _all_reduce(torch.stack([stats[key].reshape(()) for key in keys]), world)
        row = {"step": step + 1, **recipe.log_row(dict(zip(keys, reduced.tolist()))), "lr": lr,
               "grad_norm": float(grad_norm), "samples_seen": (step + 1) * B, "world_size": world,
               "step_time_s": time.perf_counter() - t0}
        log_rows.append(row)
        for cb in callbacks:
            cb.on_step_end(ctx, row)
        if (step + 1) % max(1, settings.checkpoint_every) == 0 or step + 1 == settings.max_steps:
            uri = None
            if ctx.is_main:
                uri = checkpoints.save_checkpoint(
                    ctx.out_uri, step + 1, model.trainable_state(), optimizer.state_dict(), scheduler.state_dict(),
                    {"step": step + 1, "samples_seen": (step + 1) * B, "world_size": world},
                    pa.Table.from_pylist(log_rows, schema=schema), settings.keep_checkpoints)
            for cb in callbacks:
                cb.on_checkpoint(ctx, step + 1, uri)
            report({"step": step + 1, **{k: v for k, v in row.items() if isinstance(v, float)}})

    if ctx.is_main:
        model.module.eval()
        recipe.finalize(ctx, model, log_rows)
        storage.write_table(storage.join(ctx.out_uri, "train_log.parquet"), pa.Table.from_pylist(log_rows, schema=schema))
        storage.write_json(storage.join(ctx.out_uri, "train_result.json"),
                           {"step": settings.max_steps, "resumed_from_step": start})
    for cb in callbacks:
        cb.on_train_end(ctx)
    report({"step": settings.max_steps, "done": 1})


def fit_once(recipe: Recipe, cfg: PipelineConfig, settings: LoopSettings, config: dict[str, Any], out_uri: str,
             run_name: str, what: str, progress: ProgressFn | None = None) -> dict[str, float | None]:
    """``fit``, unless the run at ``out_uri`` has finished (its ``train_result.json``: a build that
    resumes after it); returns the loss trend of the run's train log."""
    if not storage.exists(storage.join(out_uri, "train_result.json")):
        fit(recipe, cfg, settings, config, out_uri, run_name, what=what, progress=progress)
    return loss_trend(storage.read_table(storage.join(out_uri, "train_log.parquet")).to_pylist())


def loss_trend(log_rows: Sequence[dict[str, Any]], column: str = "loss") -> dict[str, float | None]:
    """Mean ``column`` over the first and the last few steps (a quarter of the run, at most 10)."""
    values = [r[column] for r in log_rows]
    k = max(1, min(10, len(values) // 4))
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else None  # noqa: E731
    return {f"{column}_first": mean(values[:k]), f"{column}_last": mean(values[-k:])}


# --------------------------------------------------------------------------- Ray Train
def _ray_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker entry: the recipe object travels in the config."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    run_worker(
        config["recipe"], config, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
        report=lambda metrics: ray.train.report(metrics),
        wrap=lambda m: ray.train.torch.prepare_model(m, move_to_device=False, parallel_strategy="ddp"),
    )


class TrainingFailed(RuntimeError):
    """A training run failed; the message names the root cause and where a rerun resumes."""


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a chain (Ray wraps a worker's error in several layers)."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__ or getattr(err, "cause", None) or err.__context__
        if not isinstance(nxt, BaseException):
            break
        err = nxt
    return err


def fit(recipe: Recipe, cfg: PipelineConfig, settings: LoopSettings, config: dict[str, Any], out_uri: str,
        run_name: str, what: str, progress: ProgressFn | None = None) -> None:
    """Train ``recipe`` on ``settings.num_workers`` Ray Train workers (DDP; gloo on CPU, NCCL on GPUs).

    A failed run raises ``TrainingFailed`` naming the root cause and the checkpoint a rerun resumes from;
    Ray restarts the worker group up to ``settings.max_failures`` times first, each resuming.
    ``progress`` receives the steps done (``lift_core.progress.count``) as the workers finish them."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from lift_core.distributed.progress_relay import StepRelay
    from lift_core.distributed.ray_runtime import ensure_ray

    settings.micro_batch(settings.num_workers, config.get("section", "train"))
    ensure_ray(cfg.ray)
    resources: dict[str, float] = {"CPU": settings.cpus_per_worker}
    if settings.use_gpu:
        resources["GPU"] = 1
    relay = StepRelay(progress, settings.max_steps, f"{what} training")  # counts steps for the driver's bar
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={**config, "callbacks": [*(config.get("callbacks") or []), *relay.callbacks],
                           "recipe": recipe, "settings": settings, "cfg": cfg.model_dump(mode="json"),
                           "out_uri": out_uri},
        scaling_config=ScalingConfig(num_workers=settings.num_workers, use_gpu=settings.use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if settings.use_gpu else "gloo"),
        run_config=RunConfig(name=run_name,
                             storage_path=cfg.ray.storage_path or os.path.join(tempfile.gettempdir(), "lift-ray-train"),
                             failure_config=FailureConfig(max_failures=settings.max_failures)),
    )
    try:
        with relay:
            trainer.fit()
    except Exception as err:  # Ray wraps worker errors; keep one readable line on top
        cause = storage.resource_error_in(err) or root_cause(err)  # disk full etc.: the path and the cause
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        ck = checkpoints.resume_point(out_uri)
        where = (f"rerun to resume from the last checkpoint (step {ck[0]}: {ck[1]})" if ck
                 else "no intact checkpoint: a rerun starts over")
        raise TrainingFailed(f"{what} training failed ({type(cause).__name__}: {first}); {where}") from err
