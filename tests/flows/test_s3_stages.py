"""synth, ingest, decode and score as Prefect tasks on an ``s3://`` run root, against a real S3-protocol
server on loopback (moto's server mode). Inputs, outputs and Prefect's cached task results all land there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.integration]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_ingest_decode_score_write_to_s3(moto_endpoint, critic_base, critic_a, tmp_path):
    fs = fsspec.filesystem("s3", skip_instance_cache=True, endpoint_url=moto_endpoint, key="testing", secret="testing")
    fs.mkdir("lift")
    fs.put(critic_a.rstrip("/") + "/", "lift/critics/a/", recursive=True)
    overrides = ["run_root=s3://lift/run", "data.synthetic.n=6", "data.synthetic.n_real=2", "data.synthetic.n_prompts=2",
                 f"critic.model={critic_base}", "critic.build_tiny=null", "score.sources=null", "decode.batch_size=4",
                 "score.batch_size=4", "ray.num_cpus=2"]
    env = {**os.environ, **CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": moto_endpoint, "PREFECT_HOME": str(tmp_path / "home"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, str(REPO / "tests/flows/s3_stages_script.py"), json.dumps(overrides),
                           "s3://lift/critics/a"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("REPORT "))[7:])

    for stage in ("ingest", "decode", "score"):
        out = report[stage]["out_uri"]
        assert out.startswith(f"s3://lift/run/{stage}/"), out
        assert fs.exists(out + "/_SUCCESS.json")
        assert all(uri.startswith("s3://lift/run/") and fs.exists(uri) for uri in report[stage]["outputs"].values())
    assert fs.glob("lift/run/synth/*/videos/*.mp4") or fs.glob("lift/run/synth/*/**.mp4")
    assert report["ingest"]["counts"]["videos"] == 8 and report["decode"]["counts"]["decoded"] == 8
    shards = fs.glob(report["decode"]["outputs"]["frames"].removeprefix("s3://") + "/*.parquet")
    assert len(shards) == 2  # 8 videos, 4 per shard
    with fs.open(report["score"]["outputs"]["scores"].removeprefix("s3://"), "rb") as f:
        scores = pq.read_table(f)
    assert scores.num_rows == 8 == len(set(scores.column("video_id").to_pylist()))
    assert set(scores.column("source").to_pylist()) == {"lift-hra", "hd-vila"}
    # Prefect's task results persist next to the run (s3), so the rerun in a new flow is all cache hits.
    assert fs.find("lift/run/_prefect/results")
    assert report["rerun_states"] == ["Cached", "Cached"]
    assert not list(tmp_path.glob("s3*")) and not (tmp_path / "lift").exists()  # nothing landed on local disk
