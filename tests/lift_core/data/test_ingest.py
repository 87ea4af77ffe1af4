"""synth -> ingest -> decode through the stage functions, as lift-full runs them; ingest's merge rules."""

from __future__ import annotations

import collections
import json
import shutil

import pyarrow.parquet as pq

from lift_core import storage
from lift_core.config import SplitConfig, load_config
from lift_core.data.ingest import assign_split, ingest_source, quarantine_uri_for, run_ingest
from lift_core.schemas import MANIFEST_SCHEMA, PROMPTS_SCHEMA, QUARANTINE_SCHEMA
from lift_core.video.decode_stage import run_decode
from lift_core.video.frames import read_frames
from lift_core.video.synth import heldout_captions, run_synth, validation_captions


def test_stages_chain_and_rerun_is_a_noop(ray_session, tmp_path):
    cfg = load_config("configs/demo.yaml", [f"run_root={tmp_path}", "data.synthetic.n=12",
                                            "data.synthetic.n_real=3", "data.synthetic.n_prompts=5"])
    synth = run_synth(cfg)
    assert set(synth.outputs) == {"hra_json", "real_json", "prompts_json", "videos_root"}
    assert synth.counts["label_motion_Bad"] == 4 and synth.counts["label_semantic_Normal"] == 4
    assert run_synth(cfg).key == synth.key  # a rerun finds _SUCCESS.json

    ingest = run_ingest(cfg, synth.outputs)
    c = ingest.counts
    # The suite also holds every validation and every held-out (evaluation) caption.
    held = len(heldout_captions(cfg.data.split))
    val = validation_captions(cfg.data.split)
    assert held and val
    assert (c["videos"], c["prompts"], c["quarantined"], c["ratings"]) == (15, 5 + len(val) + held, 0, 36)
    assert (c["videos_hd-vila"], c["videos_lift-hra"], c["prompts_synthetic-prompts"]) == (3, 12, 5 + len(val) + held)
    splits = {p["caption"]: p["split"] for p in pq.read_table(ingest.outputs["prompts"]).to_pylist()}
    assert sum(s == "test" for s in splits.values()) == held  # and only those are evaluation prompts
    assert sorted(k for k, s in splits.items() if s == "val") == sorted(val)  # evaluate.split=val has them all
    manifest = pq.read_table(ingest.outputs["manifest"])
    assert manifest.schema.equals(MANIFEST_SCHEMA)
    assert pq.read_table(ingest.outputs["prompts"]).schema.equals(PROMPTS_SCHEMA)
    rows = manifest.to_pylist()
    assert all(len(r["video_id"]) == 16 for r in rows)
    assert {r["video_id"] for r in rows} == {storage.content_id(r["uri"]) for r in rows}
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    rated = [r for r in rows if r["source"] == "lift-hra"]
    assert all(r[f"label_{d}"] in ("Good", "Normal", "Bad") and r[f"reason_{d}"] for r in rated
               for d in ("semantic", "fidelity", "motion"))
    real = [r for r in rows if r["source"] == "hd-vila"]
    assert all(r["label_semantic"] is None for r in real)

    decode = run_decode(cfg, ingest.outputs["manifest"])
    assert decode.counts["decoded"] == 15 and decode.counts["quarantined"] == 0
    frames = read_frames(decode.outputs["frames"])
    assert len(frames) == 15 and next(iter(frames.values())).shape == (8, 56, 56, 3)

    success = tmp_path / "decode" / decode.key / "_SUCCESS.json"
    mtime = success.stat().st_mtime_ns
    assert run_decode(cfg, ingest.outputs["manifest"]).to_dict() == decode.to_dict()
    assert success.stat().st_mtime_ns == mtime
    # Decode CPUs or batch size do not change the frames, hence not the key; the frame size does.
    faster = load_config("configs/demo.yaml", [f"run_root={tmp_path}", "decode.batch_size=3", "decode.num_cpus=2"])
    assert run_decode(faster, ingest.outputs["manifest"]).key == decode.key
    other = load_config("configs/demo.yaml", [f"run_root={tmp_path}", "decode.height=28", "decode.width=28"])
    smaller = run_decode(other, ingest.outputs["manifest"])
    assert smaller.key != decode.key and next(iter(read_frames(smaller.outputs["frames"]).values())).shape == (8, 28, 28, 3)


def test_missing_videos_rejects_and_duplicates_are_reported(tmp_path, fixtures_dir):
    (tmp_path / "catalog.yaml").write_text(
        "datasets:\n"
        f"  vidgen: {{uri: {fixtures_dir}/annotations/vidgen-data.json, format: lift-hra,"
        f" videos_root: {tmp_path}/nowhere, source: lift-hra}}\n"
        f"  demo: {{uri: {fixtures_dir}/lift-demo/test.json, format: lift-inference, source: generated}}\n"
        f"  demo13b: {{uri: {fixtures_dir}/lift-demo/critic_output_13b.json, format: critic-output, source: rated}}\n"
        f"  vbench: {{uri: {fixtures_dir}/prompts/vbench_full_info_opt.json, format: vbench-prompts, source: vbench}}\n"
        f"  broken: {{uri: {tmp_path}/broken.json, format: lift-inference, source: broken}}\n"
    )
    (tmp_path / "broken.json").write_text(json.dumps([{"video": f"{fixtures_dir}/lift-demo/0.mp4"}]))
    cfg = load_config(None, [f"run_root={tmp_path}/run", f"data.catalog={tmp_path}/catalog.yaml",
                             "data.datasets=[vidgen, demo, demo13b, vbench, broken]"])
    res = run_ingest(cfg, None)
    c = res.counts
    # 711 vidgen videos are missing; the 13b critic output lists the same two files as test.json.
    assert (c["videos"], c["missing_videos"], c["duplicate_videos"], c["rejected_entries"]) == (2, 711, 2, 1)
    assert (c["prompts"], c["duplicate_prompts"], c["ratings"]) == (944, 2, 1006)
    assert c["quarantined"] == 711 + 1  # same-file duplicates are counted, not quarantined
    q = pq.read_table(res.outputs["quarantine"])
    assert q.schema.equals(QUARANTINE_SCHEMA)
    errors = collections.Counter(r["error"].split(":")[0] for r in q.to_pylist())
    assert errors == {"missing video file": 711, "rejected entry 0": 1}
    assert any(r["uri"] == f"{tmp_path}/broken.json" for r in q.to_pylist())
    manifest = pq.read_table(res.outputs["manifest"]).to_pylist()
    assert {r["source"] for r in manifest} == {"generated"}  # the first dataset listed wins
    prompts = {p["caption"]: p for p in pq.read_table(res.outputs["prompts"]).to_pylist()}
    # A repeated prompt is one prompt with the tags of both entries.
    assert prompts["The bund Shanghai, oil painting"]["dimensions"] == [
        "appearance_style", "overall_consistency", "aesthetic_quality", "imaging_quality"]
    assert sum(len(p["dimensions"]) > 1 for p in prompts.values()) == 251


def test_copies_of_one_video_keep_the_first_and_quarantine_the_rest(tmp_path, fixtures_dir):
    shutil.copy(fixtures_dir / "lift-demo/0.mp4", tmp_path / "copy.mp4")
    src = tmp_path / "inference.json"
    src.write_text(json.dumps([{"video_id": "a", "video": f"{fixtures_dir}/lift-demo/0.mp4", "caption": "crane"},
                               {"video_id": "b", "video": "copy.mp4", "caption": "crane again"}]))
    counts = ingest_source("lift-inference", str(src), str(tmp_path / "m.parquet"))
    assert (counts["videos"], counts["duplicate_videos"], counts["quarantined"]) == (1, 1, 1)
    q = pq.read_table(quarantine_uri_for(str(tmp_path / "m.parquet"))).to_pylist()
    assert q[0]["uri"] == f"{tmp_path}/copy.mp4" and "duplicate content of" in q[0]["error"]
    assert q[0]["video_id"] == storage.content_id(str(fixtures_dir / "lift-demo/0.mp4"))


def test_splits_are_deterministic():
    split = SplitConfig(val=0.1, test=0.2)
    ids = [f"{i:016x}" for i in range(2000)]
    first = [assign_split(i, split) for i in ids]
    assert first == [assign_split(i, split) for i in ids]
    assert 0.15 < first.count("test") / 2000 < 0.25 and 0.06 < first.count("val") / 2000 < 0.14
    # The salt reshuffles; the fractions hold.
    other = [assign_split(i, SplitConfig(val=0.1, test=0.2, salt="other")) for i in ids]
    assert other != first
    assert all(assign_split(i, SplitConfig(val=0.0, test=0.0)) == "train" for i in ids[:50])
