"""A real multi-node run: a two-node Ray cluster on this machine, ``run_root`` on S3 (moto's server).

The scenario runs in a child process (multi_node_script.py): a process can be attached to one Ray
cluster only, and the session's own ``ray_session`` must stay usable by the tests after this one. The
child gets a private ``TMPDIR``, so its cluster's address file and Ray Train's storage (``storage_path``
is ``$TMPDIR/lift-ray-train``, shared by both nodes) are invisible to every other Ray user here.

What it shows:

- critic training with 2 workers, one per node, resumes from the last checkpoint (on S3) after its
  worker node is killed (``cluster.remove_node``) and a node takes its place (``critic.max_failures=1``);
- the resumed run equals an uninterrupted single-node run of the same plan within the stated
  tolerance: per-step loss and label loss ``rtol=1e-4``, LR ``rtol=1e-9``, held-out label
  probabilities ``atol=1e-4``, and the same held-out predictions, accuracy and confusion per dimension
  (the world size changes only the order of float sums, as the 1-worker vs 2-worker DDP tests show);
- scoring with 2 actors, one per node, writes every (video, caption) row once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from lift_core.config import DIMENSIONS

REPO = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).resolve().parent / "multi_node_script.py"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
LOSS_RTOL, LR_RTOL, PROB_ATOL = 1e-4, 1e-9, 1e-4

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def multi_node(moto_endpoint):
    """The child's report (and its wall time)."""
    import urllib.request

    import fsspec

    # moto's state is process-wide: start from an empty server, whatever other modules left in it.
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=30)
    fs = fsspec.filesystem("s3", skip_instance_cache=True, endpoint_url=moto_endpoint, key="testing", secret="testing")
    fs.mkdir("lift")
    # Short: Ray's unix sockets live under it (108-byte path limit).
    private_tmp = Path(tempfile.mkdtemp(prefix="lift-mn-", dir="/tmp"))
    work = private_tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS") and k != "LIFT_RAY_ADDRESS"}
    env.update(CREDENTIALS)
    env.update({
        "FSSPEC_S3_ENDPOINT_URL": moto_endpoint, "PYTHONPATH": str(REPO), "TMPDIR": str(private_tmp),
        "RAY_TMPDIR": str(private_tmp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every Ray process on loopback
        "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "TOKENIZERS_PARALLELISM": "false",
    })
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(SCRIPT), str(work)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        wall = time.monotonic() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
        assert proc.returncode == 0 and lines, (proc.stdout[-4000:] + "\n" + proc.stderr[-8000:])
        report = json.loads(lines[-1][len("REPORT "):])
        report["wall_s"] = round(wall, 1)
        print(f"multi-node scenario: {report['wall_s']} s wall; steps: {report['timings']}")
        yield report, fs
    finally:
        shutil.rmtree(private_tmp, ignore_errors=True)


def test_training_runs_one_worker_per_node_and_resumes_after_the_worker_node_is_killed(multi_node):
    report, fs = multi_node
    cluster, tr = report["cluster"], report["training"]
    events, starts = tr["events"], tr["starts"]
    assert "error" not in events, events
    first = [s for s in starts if s["start_step"] == 0]
    resumed = [s for s in starts if s["start_step"] > 0]
    # First attempt: 2 workers, one on the head node and one on the worker node.
    assert sorted(s["rank"] for s in first) == [0, 1] and {s["world"] for s in first} == {2}
    assert {s["node"] for s in first} == {cluster["head"], cluster["worker"]}
    # The worker on the worker node reached the first checkpoint, which was on S3 before its node was removed.
    assert tr["waited"]["step"] == 3 and events["checkpoint_before_kill"] == 3
    assert events["removed"] == cluster["worker"] and events["added"] not in (cluster["head"], cluster["worker"])
    # Ray Train restarted the group on the head node and the new node; both resumed from step 3.
    assert sorted(s["rank"] for s in resumed) == [0, 1] and {s["start_step"] for s in resumed} == {3}
    assert {s["node"] for s in resumed} == {cluster["head"], events["added"]}
    assert tr["counts"]["resumed_from_step"] == 3 and tr["counts"]["steps"] == 8
    assert tr["metrics"]["resumed_from_step"] == 3
    # Everything the run wrote is on S3 (run_root=s3://lift/run).
    assert all(uri.startswith("s3://lift/run/train_critic/") for uri in tr["outputs"].values())
    assert fs.exists(tr["outputs"]["adapter"].removeprefix("s3://") + "/adapter_config.json")
    step, uri = tr["last_checkpoint"]
    assert step == 8 and uri.startswith("s3://lift/run/train_critic/")


def test_resumed_multi_node_run_equals_a_single_node_run_within_tolerance(multi_node):
    report, _ = multi_node
    tr, ref = report["training"], report["reference"]
    log, ref_log = tr["train_log"], ref["train_log"]
    assert [r["step"] for r in log] == [r["step"] for r in ref_log] == list(range(1, 9))
    assert {r["world_size"] for r in log} == {2} and {r["world_size"] for r in ref_log} == {1}
    for column, rtol in (("loss", LOSS_RTOL), ("label_loss", LOSS_RTOL), ("lr", LR_RTOL)):
        np.testing.assert_allclose([r[column] for r in log], [r[column] for r in ref_log], rtol=rtol, err_msg=column)
    key = lambda p: (p["video_id"], p["dimension"], p["split"])
    preds, ref_preds = sorted(tr["predictions"], key=key), sorted(ref["predictions"], key=key)
    assert [key(p) for p in preds] == [key(p) for p in ref_preds]
    np.testing.assert_allclose([[p["p_good"], p["p_normal"], p["p_bad"]] for p in preds],
                               [[p["p_good"], p["p_normal"], p["p_bad"]] for p in ref_preds], atol=PROB_ATOL)
    assert [p["pred"] for p in preds] == [p["pred"] for p in ref_preds]
    for dim in DIMENSIONS:
        got, want = tr["metrics"][dim], ref["metrics"][dim]
        assert got["accuracy"] == want["accuracy"] and got["confusion"] == want["confusion"], dim
        assert got["majority_accuracy"] == want["majority_accuracy"], dim


def test_scoring_with_one_actor_per_node_writes_every_row_once(multi_node):
    report, fs = multi_node
    sc = report["scoring"]
    # Two actors, on two different nodes of the cluster (each reserves 2 of a node's 3 CPUs).
    assert len(sc["actors"]) == 2
    assert len({a["node"] for a in sc["actors"]}) == 2 and {a["node"] for a in sc["actors"]} <= set(sc["nodes"])
    assert sum(a["rows"] for a in sc["actors"]) == 12
    # Every (video, caption) of the manifest exactly once, from one critic.
    keys = [tuple(k) for k in sc["keys"]]
    assert len(keys) == len(set(keys)) == 12
    assert sorted(k[0] for k in keys) == sorted(sc["manifest_video_ids"])
    assert len({k[2] for k in keys}) == 1
    assert sc["counts"]["scored"] == 12 and sc["counts"]["quarantined"] == 0
    assert sc["scores_uri"].startswith("s3://lift/run/score/") and fs.exists(sc["scores_uri"].removeprefix("s3://"))
