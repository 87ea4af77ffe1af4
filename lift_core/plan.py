"""``lift plan``: what a config will run, per stage, checked before any work and without any model or GPU.

For each stage: its world size, per-device batch, gradient accumulation, global batch, steps, epochs
(where the data size is known from the config), GPUs, Ray actors and the GPU concurrency it holds.
Impossible arithmetic (a global batch that does not split over workers x accumulation, GPU stages
that need more devices than the GPU concurrency limit has, a curriculum longer than training) raises
``PlanError`` naming the keys and the fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lift_core.config import PipelineConfig
from lift_core.stages import STAGES


class PlanError(ValueError):
    """The config cannot run as written; the message names the keys and the fix."""


@dataclass
class StagePlan:
    stage: str
    world_size: int | None = None  # training workers
    per_device_batch: int | None = None
    grad_accum_steps: int | None = None
    global_batch: int | None = None
    steps: int | None = None
    epochs: float | None = None  # where the data size is known from the config
    actors: int | None = None  # Ray Data actors (scoring, generation, latent cache)
    gpus: int = 0  # devices the stage holds at its peak
    note: str = ""

    def row(self) -> dict:
        return {k: v for k, v in asdict(self).items()}


def _training(cfg: PipelineConfig, stage: str, section_name: str, section, examples: int | None) -> StagePlan:
    from lift_core.train import LoopSettings

    s = LoopSettings.for_stage(section)
    try:
        per_device = s.micro_batch(s.num_workers, f"{section_name}.train")
    except ValueError as err:
        raise PlanError(str(err)) from None
    epochs = round(s.max_steps * s.batch_size / examples, 2) if examples else None
    return StagePlan(stage, world_size=s.num_workers, per_device_batch=per_device,
                     grad_accum_steps=s.grad_accum_steps, global_batch=s.batch_size, steps=s.max_steps,
                     epochs=epochs, gpus=STAGES[stage].gpus(cfg))


def critic_examples(cfg: PipelineConfig) -> int | None:
    """Rated training examples of the synthetic demo data (videos x 3 questions, train split); None otherwise."""
    syn = cfg.data.synthetic
    if syn is None:
        return None
    return max(1, int(syn.n * (1 - cfg.data.split.val - cfg.data.split.test)) * 3)


def plan(cfg: PipelineConfig) -> list[StagePlan]:
    """Every stage of ``lift-full`` under ``cfg``; raises ``PlanError`` on impossible arithmetic."""
    rows: list[StagePlan] = []
    for name in STAGES:
        if name == "synth" and cfg.data.synthetic is None:
            continue
        if name == "train_critic":
            rows.append(_training(cfg, name, "critic", cfg.critic, critic_examples(cfg)))
        elif name == "align":
            row = _training(cfg, name, "align", cfg.align, None)
            row.actors, row.note = cfg.align.cache_num_actors, f"objective {cfg.align.objective}, mode {cfg.align.mode}"
            rows.append(row)
        elif name in ("generate", "score"):
            pool = cfg.generate if name == "generate" else cfg.score
            rows.append(StagePlan(name, per_device_batch=pool.batch_size, actors=pool.num_actors,
                                  gpus=STAGES[name].gpus(cfg)))
        else:
            rows.append(StagePlan(name, gpus=STAGES[name].gpus(cfg)))
    slots = cfg.prefect.gpu_slots or cfg.ray.num_gpus
    if slots:
        for row in rows:
            if row.gpus > slots:
                raise PlanError(f"stage {row.stage} needs {row.gpus} GPUs but the GPU concurrency limit has {slots} "
                                f"(prefect.gpu_slots, else ray.num_gpus): raise it, or lower the stage's workers "
                                f"or actors")
    return rows


def format_plan(rows: list[StagePlan], cfg: PipelineConfig) -> str:
    """A fixed-width table of the plan, then the GPU concurrency it runs under."""
    columns = ["stage", "world_size", "per_device_batch", "grad_accum_steps", "global_batch", "steps", "epochs",
               "actors", "gpus", "note"]
    cells = [[("–" if r.row()[c] is None else str(r.row()[c])) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    slots = cfg.prefect.gpu_slots or cfg.ray.num_gpus
    peak = max((r.gpus for r in rows), default=0)
    if not peak:
        lines.append("GPUs: none (every stage runs on CPU)")
    else:
        size = f"{slots} slot(s)" if slots else "sized when the first GPU stage runs"
        lines.append(f"GPUs: the largest stage holds {peak}; concurrency limit '{cfg.prefect.gpu_concurrency_limit}': {size}")
    return "\n".join(lines)
