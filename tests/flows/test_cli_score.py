"""``lift score`` end to end on LiFT's real demo videos: LiFT JSON in, LiFT JSON or Parquet out."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from data_catalog.readers import parse_label_answer
from lift_core import storage
from lift_core.config import TinyCriticConfig
from lift_core.critic.scoring import format_label_reason
from lift_core.schemas import MANIFEST_SCHEMA, SCORES_SCHEMA, rows_to_table

TINY = TinyCriticConfig(hidden_size=64, intermediate_size=128, vision_embed_dim=32, seed=0)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A tiny base and an untrained LoRA adapter whose adapter_config.json names that base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from lift_core.critic.builder import build_tiny_critic

    root = tmp_path_factory.mktemp("cli-critic")
    build_tiny_critic(str(root / "base"), TINY)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(str(root / "base"))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(str(root / "adapter"))
    return str(root / "adapter")


def run_cli(args: list[str]):
    from flows.cli import app

    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_lift_json_in_lift_json_out(ray_session, tmp_path, fixtures_dir, adapter_dir):
    out = tmp_path / "critic_output.json"
    args = ["score", "--videos", str(fixtures_dir / "lift-demo/test.json"), "--critic", adapter_dir, "--out", str(out),
            "--format", "lift-json", "--work-dir", str(tmp_path / "work"), "score.max_new_tokens=4"]
    summary = run_cli(args)
    assert summary["scored"] == 2 and summary["json_entries"] == 2 and summary["json_missing"] == []
    got = json.loads(out.read_text())
    reference = json.loads((fixtures_dir / "lift-demo/critic_output_13b.json").read_text())
    assert [list(e) for e in got] == [list(e) for e in reference]  # same keys, same order
    for g, r in zip(got, reference):
        assert (g["video_id"], g["video"], g["caption"]) == (r["video_id"], r["video"], r["caption"])
        for key in ("semantic consistency", "fidelity issues", "motion issues"):
            parse_label_answer(g[key])  # "Label. reason" with a known first-word label
    scores = pq.read_table(summary["scores"])
    assert scores.schema == SCORES_SCHEMA and scores.num_rows == 2
    assert all(r is not None for r in scores.column("reason_semantic").to_pylist())  # lift-json implies rationales
    labels = {(e["video"], k): e[k].split(".")[0] for e in got for k in ("semantic consistency",)}
    by_uri = {r["uri"].rsplit("/", 1)[-1]: r["label_semantic"] for r in scores.to_pylist()}
    assert all(by_uri[v] == lab for (v, _), lab in labels.items())

    # The score stage of lift-full did the work, under the work dir: a rerun finds it done and scores nothing.
    stage_dir = tmp_path / "work" / "score"
    assert summary["stage_dir"].startswith(f"{stage_dir}/")
    success = Path(summary["stage_dir"]) / "_SUCCESS.json"
    written = success.stat().st_mtime_ns
    again = run_cli(args)
    assert again == summary and json.loads(out.read_text()) == got
    assert success.stat().st_mtime_ns == written and len(list(stage_dir.iterdir())) == 1


def test_entries_are_scored_with_their_own_captions_and_rejected_ones_never(ray_session, tmp_path, fixtures_dir,
                                                                           adapter_dir):
    """Two entries of one video with different captions get the scores of their own caption; an entry
    ingest rejected (same video) and one whose file is missing are in json_missing and the quarantine,
    never in the output with another entry's scores."""
    src = tmp_path / "lift"
    src.mkdir()
    for name in ("0.mp4", "1.mp4"):
        shutil.copy(fixtures_dir / "lift-demo" / name, src / name)
    demo = json.loads((fixtures_dir / "lift-demo/test.json").read_text())
    entries = [
        demo[0],
        {"video_id": "demo_0_as_panda", "video": "0.mp4", "caption": demo[1]["caption"]},
        {"video_id": "demo_0_rejected", "video": "0.mp4", "caption": ""},
        demo[1],
        {"video_id": "gone", "video": "missing.mp4", "caption": "a video that is not there"},
    ]
    (src / "test.json").write_text(json.dumps(entries))
    out = tmp_path / "critic_output.json"
    summary = run_cli(["score", "--videos", str(src / "test.json"), "--critic", adapter_dir, "--out", str(out),
                       "--format", "lift-json", "--work-dir", str(tmp_path / "work"), "score.max_new_tokens=4"])
    assert summary["json_missing"] == ["0.mp4 (entry 2)", "missing.mp4 (entry 4)"]
    assert summary["scored"] == 3 and summary["json_entries"] == 3
    got = json.loads(out.read_text())
    assert [g["video_id"] for g in got] == ["demo_0.mp4", "demo_0_as_panda", "demo_1"]
    assert [g["caption"] for g in got] == [demo[0]["caption"], demo[1]["caption"], demo[1]["caption"]]

    quarantine = pq.read_table(summary["quarantine"]).to_pylist()
    assert any(q["error"].startswith("rejected entry 2:") for q in quarantine)
    assert any(q["uri"].endswith("missing.mp4") for q in quarantine)

    scores = pq.read_table(summary["scores"]).to_pylist()
    by_key = {(r["video_id"], r["caption"]): r for r in scores}
    assert len(scores) == len(by_key) == 3  # one row per (video, caption) of an accepted entry
    v0 = storage.content_id(str(src / "0.mp4"))
    crane, panda = by_key[(v0, demo[0]["caption"])], by_key[(v0, demo[1]["caption"])]
    assert crane["caption_id"] != panda["caption_id"]
    assert abs(crane["p_good_semantic"] - panda["p_good_semantic"]) > 1e-6  # scored apart, not copied
    for entry, row in ((got[0], crane), (got[1], panda)):
        for d, key in (("semantic", "semantic consistency"), ("fidelity", "fidelity issues"), ("motion", "motion issues")):
            assert entry[key] == format_label_reason(row[f"label_{d}"], row[f"reason_{d}"])


def test_sources_resolve_to_manifests(tmp_path, fixtures_dir):
    """SRC may be a folder of videos with sidecar captions, a LiFT JSON or a manifest."""
    from flows.cli_score import detect_source_format, prepare_manifest

    src = tmp_path / "videos"
    src.mkdir()
    shutil.copy(fixtures_dir / "lift-demo/0.mp4", src / "crane.mp4")
    shutil.copy(fixtures_dir / "lift-demo/1.mp4", src / "panda.mp4")
    (src / "crane.json").write_text(json.dumps({"caption": "a crane in a wetland"}))
    (src / "panda.json").write_text(json.dumps({"caption": "a panda in a spacesuit"}))
    (src / "nocaption.mp4").write_bytes(b"\x00" * 100)
    assert detect_source_format(str(src)) == "video-dir"
    manifest, rejects, entry_keys = prepare_manifest(str(src), "video-dir", str(tmp_path / "work"))
    rows = pq.read_table(manifest).to_pylist()
    assert sorted((r["uri"].rsplit("/", 1)[-1], r["caption"]) for r in rows) == [
        ("crane.mp4", "a crane in a wetland"), ("panda.mp4", "a panda in a spacesuit")]
    assert [r["uri"].rsplit("/", 1)[-1] for r in rejects] == ["nocaption.mp4"]  # reported, not dropped
    assert entry_keys == {}  # entries of their own only for LiFT's inference JSON
    assert detect_source_format(str(fixtures_dir / "lift-demo/test.json")) == "lift-inference"
    assert detect_source_format(manifest) == "manifest"
    # A manifest is copied with its URIs resolved (the decode stage's key then names the files).
    copied, rejects, entry_keys = prepare_manifest(manifest, "manifest", str(tmp_path / "work"))
    assert copied != manifest and (rejects, entry_keys) == ([], {})
    assert pq.read_table(copied).to_pylist() == pq.read_table(manifest).to_pylist()
    with pytest.raises(FileNotFoundError):
        detect_source_format(str(tmp_path / "nope.json"))


def test_bad_arguments_fail_with_one_line(tmp_path, fixtures_dir, monkeypatch, capsys):
    from flows import cli

    monkeypatch.setattr(sys, "argv", ["lift", "score", "--videos", str(fixtures_dir / "lift-demo/test.json"),
                                      "--critic", str(tmp_path), "--out", str(tmp_path / "s.parquet")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lift: error:") and "adapter_config.json" in err and "\n" not in err


# --------------------------------------------------------------------------- issue 27, classes 3 to 5
def _invoke(args: list[str]):
    from flows.cli import app

    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):]), result.stderr


def test_a_malformed_file_is_read_as_lift_ingest_reads_it(ray_session, lift_cli, tmp_path, fixtures_dir, adapter_dir):
    """The same entries accepted and rejected as ``lift ingest`` with the same config, including its
    ``data.max_caption_chars`` (a 5,013-character caption with the limit at 8000)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("0.mp4", "1.mp4"):
        shutil.copy(fixtures_dir / "lift-demo" / name, src / name)
    long = ("a panda in a spacesuit floats past the moon. " * 120)[:5013]
    entries = [b"null", json.dumps({"video": "0.mp4", "caption": "a crane"}).encode(),
               b'{"video": "1.mp4", "caption": "a bad \xff byte"}',  # an invalid UTF-8 byte
               b"[" * 20_000 + b"]" * 20_000, json.dumps({"video": "0\x00.mp4", "caption": "nul"}).encode(),
               json.dumps({"video": "1.mp4", "caption": long}).encode()]
    (src / "test.json").write_bytes(b"\xef\xbb\xbf[" + b",".join(entries) + b"]")
    limit = "data.max_caption_chars=8000"
    code, _, err = lift_cli("ingest", "--format", "lift-inference", "--source", str(src / "test.json"),
                            "--out", str(tmp_path / "m.parquet"), limit)
    assert code == 0, err
    ingested = pq.read_table(tmp_path / "m.parquet").to_pylist()
    ingest_q = pq.read_table(tmp_path / "m.quarantine.parquet").to_pylist()

    summary, stderr = _invoke(["score", "--videos", str(src / "test.json"), "--critic", adapter_dir,
                               "--out", str(tmp_path / "s.parquet"), "--work-dir", str(tmp_path / "work"),
                               "score.max_new_tokens=4", limit])
    assert (summary["source_format"], summary["source_format_decided_by"]) == ("lift-inference", "entry 1")
    scores = pq.read_table(summary["scores"]).to_pylist()
    assert sorted((r["uri"], r["caption"]) for r in scores) == sorted((r["uri"], r["caption"]) for r in ingested)
    assert {r["caption"] for r in scores} == {"a crane", long}
    score_q = pq.read_table(summary["quarantine"]).to_pylist()
    assert [(q["uri"], q["error"]) for q in score_q] == [(q["uri"], q["error"]) for q in ingest_q]
    assert [q["error"].split(":")[0] for q in score_q] == [f"rejected entry {i}" for i in (0, 2, 3, 4)]
    assert "4 input(s) quarantined" in stderr


def test_a_manifest_row_with_another_videos_id_is_quarantined_not_scored(ray_session, tmp_path, fixtures_dir,
                                                                        adapter_dir, monkeypatch):
    """A user manifest with relative URIs, run from another directory where other videos sit under the
    same names: its URIs mean its own folder's files, and the row that carries the other video's id is
    quarantined with both ids, with a warning; the right row is scored."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for name, other in (("0.mp4", "1.mp4"), ("1.mp4", "0.mp4")):
        shutil.copy(fixtures_dir / "lift-demo" / name, a / name)
        shutil.copy(fixtures_dir / "lift-demo" / other, b / name)
    v0, v1 = storage.content_id(str(a / "0.mp4")), storage.content_id(str(a / "1.mp4"))
    rows = [{"video_id": v0, "uri": "0.mp4", "caption": "a crane", "source": "user", "split": "test"},
            {"video_id": v0, "uri": "1.mp4", "caption": "a panda", "source": "user", "split": "test"}]
    pq.write_table(rows_to_table(rows, MANIFEST_SCHEMA), a / "m.parquet")
    monkeypatch.chdir(b)
    summary, stderr = _invoke(["score", "--videos", "../a/m.parquet", "--critic", adapter_dir, "--out",
                               str(tmp_path / "s.parquet"), "--work-dir", str(tmp_path / "work"),
                               "score.max_new_tokens=4"])
    scores = pq.read_table(summary["scores"]).to_pylist()
    assert [(r["video_id"], r["uri"], r["caption"]) for r in scores] == [(v0, f"{a}/0.mp4", "a crane")]
    [row] = pq.read_table(summary["quarantine"]).to_pylist()  # checked before any decoding
    assert (row["uri"], row["video_id"], row["stage"]) == (f"{a}/1.mp4", v0, "check-manifest")
    assert f"(expected {v0}, actual {v1})" in row["error"]
    assert "input(s) quarantined" in stderr and f"expected {v0}, actual {v1}" in stderr
