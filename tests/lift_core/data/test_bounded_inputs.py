"""Issue 18, finding 2: one entry never takes an ingest down, and no caption builds an unbounded sequence.

- A caption over ``data.max_caption_chars`` is rejected per entry at ingest, with the reason.
- Undecodable text (an invalid UTF-8 byte in the file, a lone ``\\ud800`` escape) or a caption of the
  wrong type (an integer, a list) rejects that entry with file, index and reason, in every reader
  format; the rest of the file is ingested.
- The critic's encoder cuts a caption that reaches it anyway (the second guard).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lift_core import storage
from lift_core.config import SplitConfig, load_config
from lift_core.data.ingest import build_tables, ingest_source, quarantine_uri_for, run_ingest
from lift_core.data.sources import DEFAULT_MAX_CAPTION_CHARS, ReadResult
from lift_core.domain import QUESTIONS

BIG = "a red circle moves left. " * 200_000  # 5 MB
assert len(BIG) == 5_000_000


def _demo(tmp_path: Path, fixtures_dir: Path) -> list[dict]:
    """LiFT's real inference fixture (test.json, 0.mp4, 1.mp4) copied to ``tmp_path``: its entries."""
    for name in ("0.mp4", "1.mp4", "test.json"):
        shutil.copy(fixtures_dir / "lift-demo" / name, tmp_path / name)
    return json.loads((tmp_path / "test.json").read_text())


def _quarantine(out: Path) -> list[dict]:
    return storage.read_table(quarantine_uri_for(str(out))).to_pylist()


def test_a_5mb_caption_is_rejected_at_ingest_with_the_reason(tmp_path, fixtures_dir):
    entries = _demo(tmp_path, fixtures_dir)
    entries[1]["caption"] = BIG
    src = tmp_path / "test.json"
    src.write_text(json.dumps(entries))
    out = tmp_path / "manifest.parquet"
    counts = ingest_source("lift-inference", str(src), str(out))
    assert counts["videos"] == 1 and counts["rejected_entries"] == 1
    manifest = storage.read_table(str(out)).to_pylist()
    assert [r["caption"] for r in manifest] == [entries[0]["caption"]]
    [row] = _quarantine(out)
    assert row["uri"] == str(src) and row["stage"] == "ingest"
    assert row["error"] == (f"rejected entry 1: caption is 5000000 characters, over the limit of "
                            f"{DEFAULT_MAX_CAPTION_CHARS} (data.max_caption_chars)")


def test_the_limit_is_the_config_value_in_the_ingest_stage(tmp_path, fixtures_dir):
    entries = _demo(tmp_path, fixtures_dir)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"datasets:\n  demo:\n    uri: {tmp_path}/test.json\n    format: lift-inference\n"
                       f"    source: hd-vila\n")
    cfg = load_config(None, [f"run_root={tmp_path}/run", f"data.catalog={catalog}", "data.datasets=[demo]",
                             "data.max_caption_chars=450"])
    assert sorted(len(e["caption"]) for e in entries) == [446, 484]
    res = run_ingest(cfg)
    assert res.counts["videos"] == 1 and res.counts["rejected_entries"] == 1
    [row] = storage.read_table(res.outputs["quarantine"]).to_pylist()
    assert row["error"].startswith("rejected entry 1: caption is 484 characters, over the limit of 450")


# One good entry, then one bad entry per fault; each format builds its own entries around a caption.
FAULTS = {
    "invalid UTF-8 byte": (b'"a red \xff circle"', "invalid UTF-8 byte 0xFF"),
    "lone surrogate escape": (b'"a red \\ud800 circle"', "lone surrogate escape \\ud800"),
    "integer caption": (b"7", "has type int, not text"),
    "list caption": (b'["a", "red circle"]', "has type list, not text"),
    "5 MB caption": (json.dumps(BIG).encode(), "characters, over the limit of 4000 (data.max_caption_chars)"),
}


def _hra_entry(video: str, caption: bytes) -> bytes:
    # LiFT-HRA puts the caption inside the human turn: "<video>\n <caption> <question>".
    if not caption.startswith(b'"'):
        human = caption  # a non-string human turn
    else:
        human = b'"<video>\\n ' + caption[1:-1] + b" " + QUESTIONS["motion"].encode() + b'"'
    return (b'{"video": "%s", "conversations": [{"from": "human", "value": %s}, '
            b'{"from": "gpt", "value": "Bad. It jumps."}]}' % (video.encode(), human))


def _json_entry(fmt: str, video: str, caption: bytes) -> bytes:
    if fmt == "lift-hra":
        return _hra_entry(video, caption)
    if fmt == "lift-inference":
        return b'{"video_id": "x", "video": "%s", "caption": %s}' % (video.encode(), caption)
    if fmt == "critic-output":
        return (b'{"video": "%s", "caption": %s, "semantic consistency": "Good. ok", "fidelity issues": "Bad. x", '
                b'"motion issues": "Normal. y"}' % (video.encode(), caption))
    if fmt == "alignment":
        return b'{"video": "%s", "caption": %s, "score": 0.5}' % (video.encode(), caption)
    if fmt == "vbench-prompts":
        return b'{"prompt_en": %s, "dimension": ["color"]}' % caption
    raise AssertionError(fmt)


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("fmt", ["lift-hra", "lift-inference", "critic-output", "alignment", "vbench-prompts"])
def test_a_bad_entry_rejects_only_itself_in_every_json_format(tmp_path, fixtures_dir, fmt, fault):
    _demo(tmp_path, fixtures_dir)
    bad, reason = FAULTS[fault]
    if fmt == "lift-hra" and fault in ("integer caption", "list caption"):
        reason = "conversations need exactly one 'human' and one 'gpt' turn with text"
    if fmt == "vbench-prompts":
        reason = reason.replace("caption ", "prompt_en ")
    src = tmp_path / f"{fmt}.json"
    src.write_bytes(b"[" + _json_entry(fmt, "0.mp4", b'"a red circle"') + b",\n" + _json_entry(fmt, "1.mp4", bad) + b"]")
    out = tmp_path / "out.parquet"
    counts = ingest_source(fmt, str(src), str(out))
    kept = storage.read_table(str(out)).to_pylist()
    assert [r["caption"] for r in kept] == ["a red circle"]
    assert counts["rejected_entries"] == 1 and counts["quarantined"] == 1
    [row] = _quarantine(out)
    assert row["uri"] == str(src) and row["error"].startswith("rejected entry 1: ")
    assert reason in row["error"]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_bad_caption_in_a_video_folder_rejects_only_that_video(tmp_path, fixtures_dir, fault):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("0.mp4", "1.mp4", "2.mp4"):
        shutil.copy(fixtures_dir / "lift-demo" / ("1.mp4" if name == "2.mp4" else name), videos / name)
    bad, reason = FAULTS[fault]
    (videos / "captions.json").write_bytes(b'{"0.mp4": "a red circle", "1.mp4": %s}' % bad)
    (videos / "2.json").write_bytes(b'{"caption": %s}' % bad)  # a sidecar
    out = tmp_path / "out.parquet"
    counts = ingest_source("video-dir", str(videos), str(out))
    assert [r["caption"] for r in storage.read_table(str(out)).to_pylist()] == ["a red circle"]
    rows = _quarantine(out)
    assert counts["rejected_entries"] == 2 and len(rows) == 2
    assert [r["uri"] for r in rows] == [str(videos / "1.mp4"), str(videos / "2.mp4")]
    assert all(reason in r["error"] for r in rows)
    assert rows[0]["error"].startswith("rejected entry 1: ") and f"(from {videos}/captions.json)" in rows[0]["error"]
    assert f"(from {videos}/2.json)" in rows[1]["error"]


def test_an_invalid_byte_in_a_video_path_or_reason_rejects_only_that_entry(tmp_path, fixtures_dir):
    _demo(tmp_path, fixtures_dir)
    src = tmp_path / "hra.json"
    good = _hra_entry("0.mp4", b'"a red circle"')
    bad_path = good.replace(b"0.mp4", b"1\xff.mp4")  # an invalid UTF-8 byte in the path
    bad_reason = good.replace(b"0.mp4", b"1.mp4").replace(b"Bad. It jumps.", b"Bad. It \\udc80 jumps.")
    src.write_bytes(b"[" + b",".join([good, bad_path, bad_reason]) + b"]")
    out = tmp_path / "out.parquet"
    counts = ingest_source("lift-hra", str(src), str(out))
    assert counts["videos"] == 1 and counts["rejected_entries"] == 2
    errors = [r["error"] for r in _quarantine(out)]
    assert errors[0].startswith("rejected entry 1: video path is not valid text: invalid UTF-8 byte 0xFF")
    assert errors[1].startswith("rejected entry 2: answer is not valid text")


def test_ingest_guards_records_of_any_reader(fixtures_dir, monkeypatch):
    # A reader of another package may not check its text: ingest checks every record again, before
    # its video is opened, and a value Arrow refuses is a quarantine row, never an aborted stage.
    video = str(fixtures_dir / "lift-demo/0.mp4")
    records = [
        {"uri": video, "caption": "a red circle", "source": "plugin"},
        {"uri": "/nowhere/1.mp4", "caption": BIG, "source": "plugin"},
        {"uri": "/nowhere/2.mp4", "caption": 7, "source": "plugin"},
        {"uri": "/nowhere/3\udcff.mp4", "caption": "a cat", "source": "plugin"},
        {"uri": "/nowhere/4.mp4", "caption": "a \ud800 dog", "source": "plugin"},
    ]
    opened = []
    real = storage.input_content_id  # what ingest hashes with (regular files only, bounded)

    def spy(uri, *a, **k):
        opened.append(uri)
        return real(uri, *a, **k)

    monkeypatch.setattr(storage, "input_content_id", spy)
    tables = build_tables([ReadResult("videos", records=records, uri="plugin://src")], SplitConfig())
    assert opened == [video]
    assert tables.manifest.column("caption").to_pylist() == ["a red circle"]
    rows = tables.quarantine.to_pylist()
    assert [r["uri"] for r in rows] == ["/nowhere/1.mp4", "/nowhere/2.mp4", "/nowhere/3\\udcff.mp4", "/nowhere/4.mp4"]
    assert all(r["error"].startswith("rejected record of plugin://src: ") for r in rows)
    assert "5000000 characters" in rows[0]["error"] and "has type int" in rows[1]["error"]
    assert "video path is not valid text" in rows[2]["error"] and "lone surrogate escape \\ud800" in rows[3]["error"]
    assert tables.counts["rejected_entries"] == 4
    # A value of a type Arrow refuses, in a column the checks do not know, is quarantined too.
    odd = ReadResult("videos", records=[{"uri": video, "caption": "a red circle", "source": 3}], uri="x")
    tables = build_tables([odd], SplitConfig())
    assert tables.manifest.num_rows == 0 and "unusable record" in tables.quarantine.column("error")[0].as_py()


# --------------------------------------------------------------------------- the second guard
@pytest.fixture(scope="module")
def tiny_critic(tmp_path_factory):
    import torch

    from lift_core.config import TinyCriticConfig
    from lift_core.critic.backbone import load_critic
    from lift_core.critic.builder import build_tiny_critic

    torch.set_num_threads(1)
    cfg = TinyCriticConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vision_depth=1, vision_embed_dim=32, vision_num_heads=2)
    return load_critic(build_tiny_critic(str(tmp_path_factory.mktemp("critic") / "base"), cfg), device="cpu",
                       frame_size=(56, 56))


def test_a_caption_over_the_limit_given_to_the_encoder_is_cut(tiny_critic):
    from lift_core.critic.backbone import encode_batch

    video = np.zeros((8, 56, 56, 3), np.uint8)
    tok = tiny_critic.processor.tokenizer
    long_caption = BIG[:100_000]  # about 25,000 tokens, past the tiny model's 4,096
    assert len(tok(long_caption, add_special_tokens=False)["input_ids"]) > tok.model_max_length
    short = encode_batch(tiny_critic, [video], ["a red circle"], ["semantic"])["input_ids"].shape[1]
    for caption in (long_caption, BIG):
        ids = encode_batch(tiny_critic, [video, video], [caption, "a red circle"], ["semantic", "motion"])["input_ids"]
        assert ids.shape[1] <= short + 1024 < tok.model_max_length  # bounded: not 25,000 or 1.2M tokens
        # The question still ends the prompt: the last position is still the first answer position.
        text = tok.decode(ids[0])
        assert text.rstrip().endswith("assistant") and QUESTIONS["semantic"] in text

    from lift_core.critic.backbone import MAX_CAPTION_TOKENS, bounded_caption

    caption = "A fluffy panda wears a futuristic spacesuit."
    assert bounded_caption(tiny_critic.processor, caption) == caption  # within the limit: untouched
    cut = bounded_caption(tiny_critic.processor, BIG)
    assert BIG.startswith(cut[:1000]) and len(tok(cut, add_special_tokens=False)["input_ids"]) <= MAX_CAPTION_TOKENS
