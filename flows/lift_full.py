r"""``lift-full``: the whole LiFT DAG as one recipe.

synth (demo data) -> ingest -> decode -> train critic --------------------------------> score -> align -> evaluate
                       \-> generate (base model; the prompts) -> decode generated --/

Each step is a cached, retried Prefect task; a rerun with the same inputs is all cache hits, and a
crashed stage resumes from its partial output. Every stage is submitted at once and starts when the
stages it takes outputs from have finished (``tasks.stages``), so the critic trains while the base
model generates and its videos are decoded; ``score`` waits for both. Stages that need GPUs still
queue for them in the GPU concurrency limit (``prefect.gpu_concurrency_limit``).
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import load_flow_config, publish_results, publish_run_summary
from tasks.stages import Stages


@flow(name="lift-full", log_prints=True, task_runner=ThreadPoolTaskRunner())
def lift_full(config: str = "configs/demo.yaml", overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))

    data = run.prepare_data()  # synth (demo data) -> ingest -> decode
    critic = run.train_critic(data["manifest"], data["frames"])
    generated = run.generate(data["prompts"], split="train")  # alongside the critic: it needs only the prompts
    generated_frames = run.decode(generated["outputs"]["generated"], label="decode-generated")
    scores = run.score([data["manifest"], generated["outputs"]["generated"]],
                       [data["frames"], generated_frames["outputs"]["frames"]],
                       critic["outputs"]["adapter"])  # waits for both branches
    aligned = run.align(scores["outputs"]["scores"], [data["manifest"], generated["outputs"]["generated"]])
    run.evaluate(data["prompts"], critic["outputs"]["adapter"], aligned["outputs"])
    run.wait()  # every stage done; a failed one fails the flow with its own error

    publish_run_summary(run, "lift-full")
    publish_results(run, "lift-full")  # what the run found, read back from its outputs
    return run.results
