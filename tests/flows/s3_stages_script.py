"""Run by tests/flows/test_s3_stages.py in a fresh process (its environment points s3:// at moto):
the ingest, decode and score flows on an s3:// run root, then ingest again. Prints a JSON report."""

from __future__ import annotations

import json
import sys


def main() -> None:
    overrides = json.loads(sys.argv[1])
    adapter = sys.argv[2]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.decode import decode
    from flows.ingest import ingest
    from flows.score import score

    data = ingest(config="configs/demo.yaml", overrides=overrides)
    manifest = data["outputs"]["manifest"]
    frames = decode(manifest=manifest, config="configs/demo.yaml", overrides=overrides)
    scores = score(manifests=[manifest], frames=[frames["outputs"]["frames"]], adapter=adapter,
                   config="configs/demo.yaml", overrides=overrides)
    again = ingest(config="configs/demo.yaml", overrides=overrides, return_state=True)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[again.state_details.flow_run_id])))
    print("REPORT " + json.dumps({"ingest": data, "decode": frames, "score": scores,
                                  "rerun_states": sorted(t.state.name for t in runs)}))


if __name__ == "__main__":
    main()
