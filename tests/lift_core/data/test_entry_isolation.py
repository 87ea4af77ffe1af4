"""Issue 27, class 4: one entry never takes a whole source down, and nothing hangs it.

Variants of each way an entry used to fail its source, in every reader format: an entry nested past the
parser's limit (``RecursionError``), a number Python refuses to convert, a NUL byte in a video path,
a FIFO or a device where a video or a caption file should be, a nested sidecar in a video folder. Each
rejects that entry (or file) with the file, the index and the reason; the rest is ingested.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lift_core import storage
from lift_core.data.ingest import ingest_source, quarantine_uri_for
from lift_core.data.sources import SourceError, read_source
from lift_core.domain import QUESTIONS

DEEP = "[" * 20_000 + "]" * 20_000


def _entry(fmt: str, video: str, caption: str = "a red circle") -> dict:
    if fmt == "lift-hra":
        return {"video": video, "conversations": [{"from": "human", "value": f"<video>\n {caption} {QUESTIONS['motion']}"},
                                                  {"from": "gpt", "value": "Good. Smooth."}]}
    if fmt == "critic-output":
        return {"video": video, "caption": caption, "semantic consistency": "Good. ok", "fidelity issues": "Bad. x",
                "motion issues": "Normal. y"}
    if fmt == "alignment":
        return {"video": video, "caption": caption, "score": 0.5}
    if fmt == "vbench-prompts":
        return {"prompt_en": caption, "dimension": ["color"]}
    return {"video_id": "x", "video": video, "caption": caption}


def _videos(root: Path, fixtures_dir: Path) -> None:
    root.mkdir(exist_ok=True)
    for name in ("0.mp4", "1.mp4"):
        shutil.copy(fixtures_dir / "lift-demo" / name, root / name)


def _quarantine(out: Path) -> list[dict]:
    return storage.read_table(quarantine_uri_for(str(out))).to_pylist()


@pytest.mark.parametrize("fmt", ["lift-hra", "lift-inference", "critic-output", "alignment", "vbench-prompts"])
def test_entries_that_cannot_be_decoded_reject_only_themselves(tmp_path, fixtures_dir, fmt):
    _videos(tmp_path, fixtures_dir)
    good = json.dumps(_entry(fmt, "0.mp4"))
    bad = [
        DEEP,  # a whole entry nested too deeply
        json.dumps({**_entry(fmt, "1.mp4", "other"), "deep": "@"}).replace('"@"', DEEP),  # deep inside one
        "9" * 5000,  # a number Python refuses to convert
        "null",
    ]
    src = tmp_path / f"{fmt}.json"
    src.write_text("[" + ",\n".join([good, *bad]) + "]")
    out = tmp_path / "out.parquet"
    counts = ingest_source(fmt, str(src), str(out))
    assert counts["videos" if fmt != "vbench-prompts" else "prompts"] == 1
    rows = _quarantine(out)
    assert counts["rejected_entries"] == len(bad) == len(rows)
    assert all(r["uri"] == str(src) for r in rows)
    errors = [r["error"] for r in rows]
    assert errors[0].startswith("rejected entry 1: nested too deeply to read")
    assert errors[1].startswith("rejected entry 2: nested too deeply to read")
    assert errors[2].startswith("rejected entry 3: cannot be decoded: Exceeds the limit")
    assert errors[3].startswith("rejected entry 4: entry needs")


@pytest.mark.parametrize("fmt", ["lift-hra", "lift-inference", "critic-output", "alignment"])
def test_a_nul_byte_in_a_video_path_rejects_that_entry(tmp_path, fixtures_dir, fmt):
    _videos(tmp_path, fixtures_dir)
    entries = [_entry(fmt, "0.mp4"), _entry(fmt, "1\x00.mp4", "other"), _entry(fmt, f"{tmp_path}/1.mp4\x00x", "third")]
    src = tmp_path / "src.json"
    src.write_text(json.dumps(entries))
    out = tmp_path / "out.parquet"
    counts = ingest_source(fmt, str(src), str(out))
    assert counts["videos"] == 1 and counts["rejected_entries"] == 2
    assert [r["error"][:len("rejected entry 1: video path")] for r in _quarantine(out)] == [
        "rejected entry 1: video path", "rejected entry 2: video path"]
    assert all("contains a NUL byte" in r["error"] for r in _quarantine(out))


@pytest.mark.timeout(120)
def test_a_fifo_or_a_device_as_a_video_is_quarantined_not_read(tmp_path, fixtures_dir):
    _videos(tmp_path, fixtures_dir)
    os.mkfifo(tmp_path / "pipe.mp4")  # no writer: reading it would block forever
    entries = [_entry("lift-inference", v, f"caption {i}")
               for i, v in enumerate(["0.mp4", "pipe.mp4", "/dev/zero", "/dev/null", str(tmp_path)])]
    src = tmp_path / "test.json"
    src.write_text(json.dumps(entries))
    out = tmp_path / "out.parquet"
    counts = ingest_source("lift-inference", str(src), str(out))
    assert counts["videos"] == 1 and counts["missing_videos"] == 4
    errors = {r["uri"]: r["error"] for r in _quarantine(out)}
    assert errors[str(tmp_path / "pipe.mp4")].startswith("video file refused: ")
    assert "not a regular file (a FIFO)" in errors[str(tmp_path / "pipe.mp4")]
    assert "not a regular file (a character device)" in errors["/dev/zero"]
    assert "not a regular file (a character device)" in errors["/dev/null"]
    assert errors[str(tmp_path)] == f"not a file: {tmp_path}"


@pytest.mark.timeout(120)
def test_a_fifo_or_a_device_as_the_source_is_one_error_naming_it(tmp_path):
    os.mkfifo(tmp_path / "pipe.json")
    for src, kind in ((tmp_path / "pipe.json", "a FIFO"), ("/dev/zero", "a character device")):
        with pytest.raises(SourceError, match=rf"^cannot read {src}: not a regular file \({kind}\)"):
            read_source("lift-inference", str(src))


@pytest.mark.timeout(120)
def test_a_video_folder_loses_only_the_entries_at_fault(tmp_path, fixtures_dir):
    videos = tmp_path / "videos"
    _videos(videos, fixtures_dir)
    for name in ("2.mp4", "3.mp4", "4.mp4"):
        shutil.copy(fixtures_dir / "lift-demo/1.mp4", videos / name)
    (videos / "captions.json").write_text(json.dumps({"0.mp4": "a red circle", "1.mp4": "a blue square"}))
    (videos / "2.json").write_text('{"caption": ' + DEEP + "}")  # a nested sidecar
    (videos / "3.json").write_text('{"caption": "ok", "n": ' + "9" * 5000 + "}")
    os.mkfifo(videos / "4.json")  # a sidecar that is a FIFO
    os.mkfifo(videos / "5.mp4")  # a video that is a FIFO
    out = tmp_path / "out.parquet"
    counts = ingest_source("video-dir", str(videos), str(out))
    kept = sorted(r["uri"].rsplit("/", 1)[-1] for r in storage.read_table(str(out)).to_pylist())
    assert kept == ["0.mp4", "1.mp4"] and counts["rejected_entries"] == 4
    errors = {r["uri"].rsplit("/", 1)[-1]: r["error"] for r in _quarantine(out)}
    assert errors["2.json"].startswith(f"rejected entry 2: bad sidecar: {videos}/2.json: nested too deeply")
    assert errors["3.json"].startswith(f"rejected entry 3: bad sidecar: {videos}/3.json: cannot be decoded")
    assert "not a regular file (a FIFO)" in errors["4.json"]
    assert errors["5.mp4"].startswith("rejected entry 5: not a regular file (a FIFO)")

    # A captions.json that cannot be read is that file's reject: the videos it would caption say why.
    (videos / "captions.json").write_text("[" * 20_000)
    counts = ingest_source("video-dir", str(videos), str(out))
    errors = {r["uri"].rsplit("/", 1)[-1]: r["error"] for r in _quarantine(out)}
    assert errors["captions.json"].startswith(f"{videos}/captions.json: nested too deeply to read")
    assert errors["0.mp4"].startswith("rejected entry 0: no caption")
