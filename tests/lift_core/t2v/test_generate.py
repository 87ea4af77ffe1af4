"""Generation stage: fixed seeds, mp4s of 4k+1 frames, manifest rows keyed by content; resumable."""

from __future__ import annotations

import pytest

from lift_core import storage
from lift_core.t2v.generate import (
    GENERATED_SCHEMA,
    T2VGenerator,
    generate_jobs,
    generate_stage_dir,
    plan_jobs,
    prompt_seed,
    run_generate,
    select_prompts,
)
from lift_core.video.io import read_video


def test_generated_videos_and_manifest(generated, t2v_cfg, t2v_root):
    table = storage.read_table(generated.outputs["generated"])
    assert table.schema.equals(GENERATED_SCHEMA)
    rows = table.to_pylist()
    assert len(rows) == 3 * 2 and generated.counts["videos"] == 6
    assert {r["source"] for r in rows} == {"generated"} and {r["split"] for r in rows} == {"train"}
    assert len({r["video_id"] for r in rows}) == 6  # different seeds -> different videos
    for r in rows:
        assert r["seed"] == prompt_seed(t2v_cfg.generate.seed, r["prompt_id"], r["index"])
        assert r["video_id"] == storage.content_id(r["uri"])
        v = read_video(r["uri"], num_frames=None, height=32, width=32)
        assert v.num_frames_total == t2v_cfg.t2v.num_frames == 9 and (9 - 1) % 4 == 0
        assert r["label_semantic"] is None and r["caption"]
    # A finished stage is a no-op on rerun.
    assert run_generate(t2v_cfg, str(t2v_root / "prompts.parquet"), split="train") == generated


def test_same_seed_same_video(generated, t2v_cfg, tiny_t2v, tmp_path):
    row = storage.read_table(generated.outputs["generated"]).to_pylist()[0]
    gen = T2VGenerator(tiny_t2v, t2v_cfg.t2v, str(tmp_path))
    job = {**row, "name": "again.mp4"}
    again = gen.run_jobs([job])[0]
    assert again["video_id"] == row["video_id"]


def test_generator_generates_through_the_family(t2v_cfg, tiny_t2v, tmp_path, monkeypatch):
    """``T2VGenerator.generate`` is the family's ``generate`` (no pipeline call of its own), seeded per video."""
    import numpy as np
    import torch

    gen = T2VGenerator(tiny_t2v, t2v_cfg.t2v, str(tmp_path))
    t = t2v_cfg.t2v
    shape = {"height": t.height, "width": t.width, "num_frames": t.num_frames,
             "num_inference_steps": t.num_inference_steps, "guidance_scale": t.guidance_scale,
             "max_sequence_length": t.max_sequence_length}
    direct = gen.spec.generate(gen.pipe, ["a red ball"], [torch.Generator(device="cpu").manual_seed(11)], **shape)
    calls = []
    family_generate = gen.spec.generate

    def spy(pipe, captions, generators, **kwargs):
        calls.append((pipe, list(captions), [g.initial_seed() for g in generators], kwargs))
        return family_generate(pipe, captions, generators, **kwargs)

    monkeypatch.setattr(gen.spec, "generate", spy)
    videos = gen.generate(["a red ball"], [11])
    assert calls == [(gen.pipe, ["a red ball"], [11], shape)]
    assert videos.dtype == np.uint8 and videos.shape == (1, t.num_frames, t.height, t.width, 3)
    np.testing.assert_array_equal(videos, direct)


def test_generation_resumes_after_a_crash(ray_session, t2v_cfg, tiny_t2v, prompts_uri, t2v_root):
    cfg = t2v_cfg.model_copy(deep=True)
    cfg.generate.seed = 7  # a separate stage directory from the session's run
    prompts = select_prompts(prompts_uri, "test", None)
    jobs = plan_jobs(prompts, cfg.generate.videos_per_prompt, cfg.generate.seed, "test", "base")
    # A first attempt that died after its first shard: only the first prompt's video exists.
    _, out = generate_stage_dir(cfg, prompts_uri, "test", None, "base")
    table, n = generate_jobs(cfg, jobs[:1], out, model=tiny_t2v)
    assert n == 1 and table.num_rows == 1
    res = run_generate(cfg, prompts_uri, split="test")
    assert res.out_uri == out
    assert res.counts == {"prompts": 2, "videos": 4, "generated_now": 3, "resumed": 1}
    rows = storage.read_table(res.outputs["generated"]).to_pylist()
    assert [(r["prompt_id"], r["index"]) for r in rows] == [("p03", 0), ("p03", 1), ("p04", 0), ("p04", 1)]


def test_bad_prompt_tables(t2v_root, prompts_uri):
    with pytest.raises(FileNotFoundError):
        select_prompts(str(t2v_root / "missing.parquet"), "train", None)
    import pyarrow as pa

    bad = str(t2v_root / "not-prompts.parquet")
    storage.write_table(bad, pa.table({"caption": ["x"]}))
    with pytest.raises(ValueError, match="missing columns"):
        select_prompts(bad, "train", None)
    assert [p["prompt_id"] for p in select_prompts(prompts_uri, "train", 2)] == ["p00", "p01"]
