"""Checkpoints are verified: a truncated, altered or unfinished checkpoint is skipped (with the file and
the reason logged) and resume falls back to the newest intact one; no pickle is executed from storage."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import pytest
import torch

from lift_core import storage
from lift_core.train import CorruptCheckpoint, latest_checkpoint, run_worker
from lift_core.train.checkpoints import (MANIFEST, OPTIMIZER, WEIGHTS, read_checkpoint, read_newest_intact, resume_message,
                                        resume_point)



@pytest.fixture
def trained(tmp_path, Regression, loop_config, train_log):
    """A 6-step run with checkpoints at steps 2, 4 and 6, and its train log."""
    run_worker(Regression(), loop_config(tmp_path / "run"))
    return tmp_path / "run", train_log(tmp_path / "run")


def _ck(out, step):
    return out / "checkpoints" / f"step-{step:06d}"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", [OPTIMIZER, WEIGHTS])
def test_truncated_file_falls_back_to_the_previous_checkpoint(trained, name, caplog):
    out, _ = trained
    _truncate(_ck(out, 6) / name)
    assert latest_checkpoint(str(out))[0] == 4
    with caplog.at_level(logging.WARNING, logger="lift.train"):
        ck = read_newest_intact(str(out))
    assert ck.step == 4
    assert any("step-000006" in r.getMessage() and name in r.getMessage() for r in caplog.records)


def test_resume_skips_the_corrupt_checkpoint_and_reproduces_the_run(trained, Regression, loop_config, train_log):
    out, ref = trained
    _truncate(_ck(out, 6) / OPTIMIZER)
    os.remove(out / "train_log.parquet")
    # A rerun over the same folder resumes from step 4 (not 6) and recomputes steps 5 and 6 exactly.
    run_worker(Regression(), loop_config(out))
    log = train_log(out)
    assert storage.read_json(str(out / "train_result.json"))["resumed_from_step"] == 4
    np.testing.assert_allclose([r["loss"] for r in log], [r["loss"] for r in ref], rtol=1e-6)
    assert latest_checkpoint(str(out))[0] == 6  # rewritten whole


def test_a_checkpoint_without_manifest_is_incomplete(trained):
    out, _ = trained
    os.remove(_ck(out, 6) / MANIFEST)
    assert latest_checkpoint(str(out))[0] == 4
    with pytest.raises(CorruptCheckpoint, match="manifest.json is missing"):
        read_checkpoint(str(_ck(out, 6)))


def test_an_altered_file_of_the_same_size_is_caught_by_its_hash(trained):
    out, _ = trained
    path = _ck(out, 6) / WEIGHTS
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert latest_checkpoint(str(out))[0] == 6  # the cheap check sees the right size
    with pytest.raises(CorruptCheckpoint, match=f"step-000006/{WEIGHTS}"):
        read_checkpoint(str(_ck(out, 6)))
    assert read_newest_intact(str(out)).step == 4


@pytest.mark.parametrize("stray, is_dir", [
    ("step-000040.bak", True),  # a user's backup copy of a checkpoint
    ("step-000008", False),  # a file named like a checkpoint
    ("step-", True), ("step-4a", True), ("latest", True), ("notes.txt", False), (".DS_Store", False),
])
def test_what_is_not_a_checkpoint_is_ignored_and_named(trained, Regression, loop_config, stray, is_dir, caplog):
    out, _ = trained
    path = out / "checkpoints" / stray
    if is_dir:
        path.mkdir()
        (path / MANIFEST).write_text(json.dumps({"step": 40, "files": {}}))
    else:
        path.write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="lift.train"):
        assert latest_checkpoint(str(out))[0] == 6
        assert resume_point(str(out))[0] == 6
        assert read_newest_intact(str(out)).step == 6
    named = [r.getMessage() for r in caplog.records if stray in r.getMessage()]
    assert len(named) == 1 and "not a checkpoint" in named[0]  # said once, not at every listing
    _truncate(_ck(out, 6) / WEIGHTS)
    run_worker(Regression(), loop_config(out, keep_checkpoints=1))  # resumes, then prunes old checkpoints
    assert storage.read_json(str(out / "train_result.json"))["resumed_from_step"] == 4
    assert path.exists()  # never pruned: it is not the loop's to delete


def _alter(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damaged, expected", [
    ({6: WEIGHTS}, 4),  # same size: only the hash sees it
    ({6: OPTIMIZER, 4: WEIGHTS}, 2),
    ({6: WEIGHTS, 4: WEIGHTS, 2: OPTIMIZER}, 0),
    ({}, 6),
])
def test_the_step_announced_is_the_step_the_workers_resume_from(trained, Regression, loop_config, damaged, expected,
                                                                caplog):
    out, _ = trained
    for step, name in damaged.items():
        _alter(_ck(out, step) / name)
    announced = resume_point(str(out))
    assert (announced[0] if announced else 0) == expected
    message = resume_message(str(out))
    assert message.startswith(f"resuming from step {expected} (") if expected else \
        message == "starting from step 0 (no intact checkpoint)"
    with caplog.at_level(logging.INFO, logger="lift.train"):
        run_worker(Regression(), loop_config(out))
    assert storage.read_json(str(out / "train_result.json"))["resumed_from_step"] == expected
    said = [r.getMessage() for r in caplog.records if "step 0" in r.getMessage() or "resuming" in r.getMessage()]
    assert said and said[-1].startswith(f"resuming from step {expected} " if expected else "starting from step 0")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/lift-pwned",))


def test_no_pickle_runs_from_a_checkpoint(trained):
    """Whoever can write the run root must not run code on the workers: a pickle payload in optimizer.pt,
    with a manifest that matches it, is refused by ``torch.load(weights_only=True)``."""
    out, _ = trained
    ck = _ck(out, 6)
    import io

    buf = io.BytesIO()
    torch.save({"state": Payload()}, buf)
    (ck / OPTIMIZER).write_bytes(buf.getvalue())
    manifest = json.loads((ck / MANIFEST).read_text())
    manifest["files"][OPTIMIZER] = {"size": len(buf.getvalue()), "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
    (ck / MANIFEST).write_text(json.dumps(manifest))
    if os.path.exists("/tmp/lift-pwned"):
        os.remove("/tmp/lift-pwned")
    with pytest.raises(CorruptCheckpoint, match="optimizer.pt cannot be loaded safely"):
        read_checkpoint(str(ck))
    assert not os.path.exists("/tmp/lift-pwned")


def test_the_newest_checkpoint_on_s3_is_seen_after_another_process_wrote_it(moto_endpoint, monkeypatch, tmp_path,
                                                                           Regression, loop_config):
    """s3fs caches folder listings per process: the driver must still see checkpoints that the Ray Train
    workers wrote (and pruned) after it last looked."""
    import urllib.request

    import fsspec

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=30)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": moto_endpoint}})
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("lift")
    out = "s3://lift/run/train"
    run_worker(Regression(), loop_config(tmp_path, max_steps=2) | {"out_uri": out})
    assert latest_checkpoint(out)[0] == 2  # this process has now listed (and cached) the folder
    other = fsspec.filesystem("s3", skip_instance_cache=True)  # another process: its own listing cache
    for name in other.ls("lift/run/train/checkpoints/step-000002"):
        other.copy(name, name.replace("step-000002", "step-000004"))
    assert latest_checkpoint(out)[0] == 4
