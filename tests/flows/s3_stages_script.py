"""Run by tests/flows/test_s3_stages.py in a fresh process (its environment points s3:// at moto):
synth, ingest, decode and score as Prefect tasks on an s3:// run root, then synth and ingest again in a
new flow run. Prints a JSON report."""

from __future__ import annotations

import json
import sys

from prefect import flow

from flows.common import load_flow_config
from tasks.stages import Stages


@flow(name="s3-data-and-scores")
def data_and_scores(overrides: list[str], adapter: str) -> dict:
    run = Stages(load_flow_config("configs/demo.yaml", overrides))
    data = run.prepare_data()
    run.score([data["manifest"]], [data["frames"]], adapter)
    run.wait()
    return {label: run.results[label] for label in ("ingest", "decode", "score")}


@flow(name="s3-ingest-again")
def ingest_again(overrides: list[str]) -> list[str]:
    run = Stages(load_flow_config("configs/demo.yaml", overrides))
    run.ingest(run.synth())
    run.wait()
    return sorted(run.states.values())


def main() -> None:
    overrides, adapter = json.loads(sys.argv[1]), sys.argv[2]
    report = data_and_scores(overrides, adapter)
    print("REPORT " + json.dumps({**report, "rerun_states": ingest_again(overrides)}))


if __name__ == "__main__":
    main()
