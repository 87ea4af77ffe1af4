"""synth -> ingest -> decode through the stage functions, as lift-full runs them."""

from __future__ import annotations

import pyarrow.parquet as pq

from lift_core import storage
from lift_core.config import SplitConfig, load_config
from lift_core.data.ingest import assign_split, run_ingest
from lift_core.video.decode_stage import run_decode
from lift_core.video.frames import read_frames
from lift_core.video.synth import run_synth


def test_stages_chain_and_rerun_is_a_noop(ray_session, tmp_path):
    cfg = load_config("configs/demo.yaml", [f"run_root={tmp_path}", "data.synthetic.n=12",
                                            "data.synthetic.n_real=3", "data.synthetic.n_prompts=5"])
    synth = run_synth(cfg)
    ingest = run_ingest(cfg, synth.outputs)
    assert ingest.counts == {"videos": 15, "prompts": 5, "quarantined": 0, "videos_hd-vila": 3, "videos_lift-hra": 12}
    manifest = pq.read_table(ingest.outputs["manifest"]).to_pylist()
    assert all(len(r["video_id"]) == 16 for r in manifest)
    assert {r["video_id"] for r in manifest} == {storage.content_id(r["uri"]) for r in manifest}
    assert {r["split"] for r in manifest} <= {"train", "val", "test"}
    rated = [r for r in manifest if r["source"] == "lift-hra"]
    assert all(r["label_semantic"] in ("Good", "Normal", "Bad") for r in rated)

    decode = run_decode(cfg, ingest.outputs["manifest"])
    assert decode.counts["decoded"] == 15 and decode.counts["quarantined"] == 0
    assert len(read_frames(decode.outputs["frames"])) == 15

    mtime = (tmp_path / "decode" / decode.key / "_SUCCESS.json").stat().st_mtime
    assert run_decode(cfg, ingest.outputs["manifest"]).key == decode.key
    assert (tmp_path / "decode" / decode.key / "_SUCCESS.json").stat().st_mtime == mtime
    # Another decode size is another key.
    other = load_config("configs/demo.yaml", [f"run_root={tmp_path}", "decode.height=28", "decode.width=28"])
    assert run_decode(other, ingest.outputs["manifest"]).key != decode.key


def test_missing_videos_are_quarantined(tmp_path, fixtures_dir):
    cfg = load_config(None, [f"run_root={tmp_path}", f"data.catalog={tmp_path}/catalog.yaml",
                             "data.datasets=[vidgen, demo]"])
    (tmp_path / "catalog.yaml").write_text(
        "datasets:\n"
        f"  vidgen: {{uri: {fixtures_dir}/annotations/vidgen-data.json, format: lift-hra,"
        f" videos_root: {tmp_path}/nowhere, source: lift-hra}}\n"
        f"  demo: {{uri: {fixtures_dir}/lift-demo/test.json, format: lift-inference, source: generated}}\n"
    )
    res = run_ingest(cfg, None)
    assert res.counts["videos"] == 2 and res.counts["quarantined"] == 711
    q = pq.read_table(res.outputs["quarantine"]).to_pylist()
    assert all("missing file" in r["error"] for r in q)


def test_splits_are_deterministic():
    split = SplitConfig(val=0.1, test=0.2)
    ids = [f"{i:016x}" for i in range(2000)]
    first = [assign_split(i, split) for i in ids]
    assert first == [assign_split(i, split) for i in ids]
    assert 0.15 < first.count("test") / 2000 < 0.25 and 0.06 < first.count("val") / 2000 < 0.14
