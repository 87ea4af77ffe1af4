"""``lift-full``: the whole LiFT DAG as one recipe.

synth (demo data) -> ingest -> decode -> train critic -> generate -> decode generated
-> score (real + generated) -> align -> evaluate. Each step is a cached, retried Prefect task;
a rerun with the same inputs is all cache hits, and a crashed stage resumes from its partial output.
"""

from __future__ import annotations

from prefect import flow

from flows.common import load_flow_config, publish_results, publish_run_summary
from tasks.stages import Stages


@flow(name="lift-full", log_prints=True)
def lift_full(config: str = "configs/demo.yaml", overrides: list[str] | None = None) -> dict:
    run = Stages(load_flow_config(config, overrides))

    data = run.prepare_data()  # synth (demo data) -> ingest -> decode
    critic = run.train_critic(data["manifest"], data["frames"])
    generated = run.generate(data["prompts"], split="train")
    generated_frames = run.decode(generated["outputs"]["generated"], label="decode-generated")
    scores = run.score([data["manifest"], generated["outputs"]["generated"]],
                       [data["frames"], generated_frames["outputs"]["frames"]],
                       critic["outputs"]["adapter"])
    aligned = run.align(scores["outputs"]["scores"], [data["manifest"], generated["outputs"]["generated"]])
    run.evaluate(data["prompts"], critic["outputs"]["adapter"], aligned["outputs"])

    publish_run_summary(run, "lift-full")
    publish_results(run, "lift-full")  # what the run found, read back from its outputs
    return run.results
