"""Issue 27, classes 4 and 5 at the commands: ``lift ingest`` and ``lift score`` read a malformed file
the same way (the same entries accepted, the same rejected, with the same reasons), and every command
honours the config's ``data.*`` limits.

The ``lift score`` side here is its reading (``source_format``, ``prepare_manifest``) with the limits
its config gives; ``tests/flows/test_cli_score.py`` runs the whole command on such a file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.cli_score import prepare_manifest, source_format
from lift_core.config import load_config
from lift_core.critic.import_scores import detect_format
from lift_core.data.inputs import InputLimits
from lift_core.domain import QUESTIONS

LONG = ("a red circle moves left over a grey floor. " * 120)[:5013]  # LiFT-length captions are < 1,000
DEEP = b"[" * 20_000 + b"]" * 20_000


def _hra(video: str, caption: str, dim: str = "motion", answer: str = "Good. Smooth.") -> bytes:
    return json.dumps({"video": video, "conversations": [
        {"from": "human", "value": f"<video>\n {caption} {QUESTIONS[dim]}"}, {"from": "gpt", "value": answer}]}).encode()


def _inference(video: str, caption: str) -> bytes:
    return json.dumps({"video_id": video, "video": video, "caption": caption}).encode()


def malformed(root: Path, fixtures_dir: Path, fmt: str) -> Path:
    """A LiFT file with one fault per entry: a BOM, a first entry that is ``null``, an invalid UTF-8
    byte in a caption, an entry nested too deeply, a NUL byte in a path, a 5,013-character caption,
    a number Python refuses, and a FIFO as a video."""
    root.mkdir(exist_ok=True)
    for name in ("0.mp4", "1.mp4"):
        shutil.copy(fixtures_dir / "lift-demo" / name, root / name)
    if not (root / "pipe.mp4").exists():
        os.mkfifo(root / "pipe.mp4")
    entry = _hra if fmt == "lift-hra" else _inference
    entries = [b"null", entry("0.mp4", "a red circle"), entry("1.mp4", "a blue square").replace(b"blue", b"bl\xffue"),
               DEEP, entry("2\x00.mp4", "a nul"), entry("1.mp4", LONG), b"9" * 5000, entry("pipe.mp4", "a pipe")]
    src = root / f"{fmt}.json"
    src.write_bytes(b"\xef\xbb\xbf[" + b",\n".join(entries) + b"]")
    return src


def _ingest(lift_cli, fmt: str, src: Path, out: Path, *overrides: str) -> tuple[list, list]:
    code, stdout, err = lift_cli("ingest", "--format", fmt, "--source", str(src), "--out", str(out), *overrides)
    assert code == 0, err
    accepted = sorted((r["uri"], r["caption"]) for r in pq.read_table(out).to_pylist())
    rejected = [(r["uri"], r["error"]) for r in pq.read_table(str(out).replace(".parquet", ".quarantine.parquet")).to_pylist()]
    return accepted, rejected


def _score_reads(src: Path, work: Path, *overrides: str) -> tuple[str, list, list]:
    limits = InputLimits.from_config(load_config(None, list(overrides)).data)
    fmt, decided_by = source_format(str(src), limits)
    manifest, rejects, _ = prepare_manifest(str(src), fmt, str(work), limits)
    accepted = sorted((r["uri"], r["caption"]) for r in pq.read_table(manifest).to_pylist())
    return f"{fmt} ({decided_by})", accepted, [(r["uri"], r["error"]) for r in rejects]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["lift-hra", "lift-inference"])
@pytest.mark.parametrize("limit", [None, 8000])
def test_lift_score_and_lift_ingest_accept_and_reject_the_same_entries(lift_cli, tmp_path, fixtures_dir, fmt, limit):
    src = malformed(tmp_path / "src", fixtures_dir, fmt)
    overrides = [f"data.max_caption_chars={limit}"] if limit else []
    accepted, rejected = _ingest(lift_cli, fmt, src, tmp_path / "ingested.parquet", *overrides)
    detected, score_accepted, score_rejected = _score_reads(src, tmp_path / "work", *overrides)
    assert detected == f"{fmt} (entry 1)"  # entry 0 is null: it decides nothing
    assert score_accepted == accepted and score_rejected == rejected

    videos = tmp_path / "src"
    assert accepted == sorted([(f"{videos}/0.mp4", "a red circle"), *([(f"{videos}/1.mp4", LONG)] if limit else [])])
    assert [e.split(":")[0] for _, e in rejected] == [
        "rejected entry 0", "rejected entry 2", "rejected entry 3", "rejected entry 4",
        *(["rejected entry 5"] if not limit else []), "rejected entry 6", "video file refused"]
    reasons = [e.split(": ", 1)[1] for _, e in rejected]
    assert any("invalid UTF-8 byte 0xFF" in r for r in reasons) and any("nested too deeply" in r for r in reasons)
    assert any("contains a NUL byte" in r for r in reasons) and any("Exceeds the limit" in r for r in reasons)
    assert any("5013 characters, over the limit of 4000" in r for r in reasons) == (limit is None)
    assert rejected[-1] == (f"{videos}/pipe.mp4", f"video file refused: {videos}/pipe.mp4: not a regular file (a FIFO); "
                                                  "only regular files are read")


def test_every_command_honours_the_configs_data_limits(lift_cli, tmp_path, fixtures_dir):
    src = malformed(tmp_path / "src", fixtures_dir, "lift-inference")
    # Byte limits: a source over data.max_json_bytes is refused whole, by both commands, naming the setting.
    for run in (lambda: _ingest(lift_cli, "lift-inference", src, tmp_path / "m.parquet", "data.max_json_bytes=1000"),):
        with pytest.raises(AssertionError, match=r"over the limit of 1000 \(data.max_json_bytes\)"):
            run()
    with pytest.raises(ValueError, match=r"over the limit of 1000 \(data.max_json_bytes\)"):
        _score_reads(src, tmp_path / "work", "data.max_json_bytes=1000")
    # A video over data.max_video_bytes is quarantined, naming the setting.
    accepted, rejected = _ingest(lift_cli, "lift-inference", src, tmp_path / "m.parquet", "data.max_video_bytes=1000")
    assert accepted == [] and sum("over the limit of 1000 (data.max_video_bytes)" in e for _, e in rejected) == 1


def test_import_scores_reads_as_the_others_do(lift_cli, tmp_path, fixtures_dir):
    """``lift import-scores``: the first entry that decides the format, and data.max_caption_chars."""
    shutil.copy(fixtures_dir / "lift-demo/0.mp4", tmp_path / "0.mp4")
    answers = {"semantic consistency": "Good. ok", "fidelity issues": "Bad. x", "motion issues": "Normal. y"}
    entries = [None, {"video": "0.mp4", "caption": LONG, **answers}]
    (tmp_path / "out.json").write_text(json.dumps(entries))
    (tmp_path / "align.json").write_text(json.dumps([None, {"video": "0.mp4", "caption": "a", "score": 0.5}]))
    assert detect_format(str(tmp_path / "out.json")) == "critic-output"
    assert detect_format(str(tmp_path / "align.json")) == "alignment"  # entry 0 (null) decides nothing
    for overrides, rows in (([], 0), (["data.max_caption_chars=8000"], 1)):
        code, out, err = lift_cli("import-scores", str(tmp_path / "out.json"), "--format", "critic-output",
                                  "--out", str(tmp_path / f"s{rows}.parquet"), *overrides)
        assert code == 0, err
        assert json.loads(out[out.index("{"):])["rows"] == rows


@pytest.mark.timeout(300)
def test_decode_honours_the_video_byte_limit(ray_session, lift_cli, tmp_path, fixtures_dir):
    src = malformed(tmp_path / "src", fixtures_dir, "lift-inference")
    _ingest(lift_cli, "lift-inference", src, tmp_path / "m.parquet")
    code, out, err = lift_cli("decode", "--manifest", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "d"),
                              "--frames", "2", "--height", "16", "--width", "16", "data.max_video_bytes=1000")
    assert code == 0, err
    res = json.loads(out[out.index("{"):])
    assert res["counts"]["decoded"] == 0 and res["counts"]["quarantined"] == 1
    [row] = pq.read_table(res["outputs"]["quarantine"]).to_pylist()
    assert "over the limit of 1000 (data.max_video_bytes)" in row["error"]
