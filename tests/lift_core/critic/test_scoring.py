"""Batched critic scoring on a tiny critic: batching, rationales, real videos, Ray Data, resume, stage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lift_core import storage
from lift_core.config import DIMENSIONS, LABELS, CriticConfig, PipelineConfig, ScoreConfig, TinyCriticConfig
from lift_core.schemas import MANIFEST_SCHEMA, SCORES_SCHEMA, rows_to_table
from lift_core.video.frames import frames_schema, frames_table

TINY = TinyCriticConfig(hidden_size=64, intermediate_size=128, vision_embed_dim=32, seed=0)
CAPTIONS = ["a red ball", "two blue squares moving smoothly from the left edge of the frame to the right edge", "x"]


def save_fresh_adapter(base: str, out: str, seed: int = 0) -> str:
    """An untrained LoRA adapter with non-zero weights, saved as the trainer saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_critic(tmp_path_factory):
    from lift_core.critic.builder import build_tiny_critic

    root = tmp_path_factory.mktemp("critic")
    base = str(root / "base")
    build_tiny_critic(base, TINY)
    return base, save_fresh_adapter(base, str(root / "adapter"))


@pytest.fixture(scope="module")
def scorer(tiny_critic):
    from lift_core.critic.scoring import CriticScorer

    base, adapter = tiny_critic
    torch.set_num_threads(1)
    return CriticScorer(adapter, critic=CriticConfig(model=base), score=ScoreConfig(batch_size=8, max_new_tokens=6),
                        frame_size=(56, 56), device="cpu")


def random_videos(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(8, 56, 56, 3), dtype=np.uint8) for _ in range(n)]


def test_batched_left_padded_scores_equal_one_video_at_a_time(scorer):
    videos = random_videos(3)
    probs, reasons = scorer.score(videos, CAPTIONS, rationale=False)
    assert probs.shape == (3, len(DIMENSIONS), len(LABELS)) and reasons is None
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-6)
    alone = np.concatenate([scorer.score([v], [c], rationale=False)[0] for v, c in zip(videos, CAPTIONS)])
    np.testing.assert_allclose(probs, alone, atol=2e-5)
    # The adapter matters and the questions differ: not one constant distribution.
    assert np.abs(probs[0, 0] - probs[0, 1]).max() > 1e-6 and np.abs(probs[0, 0] - probs[1, 0]).max() > 1e-6


def test_probabilities_are_the_label_tokens_at_the_first_answer_position(scorer):
    from lift_core.critic.backbone import encode_batch

    video = random_videos(1, seed=3)[0]
    probs, _ = scorer.score([video], [CAPTIONS[1]], rationale=False)
    for j, dim in enumerate(DIMENSIONS):
        inputs = {k: v.to("cpu") if hasattr(v, "to") else v
                  for k, v in encode_batch(scorer.loaded, [video], [CAPTIONS[1]], [dim]).items()}
        with torch.inference_mode():
            logits = scorer.loaded.model(**inputs).logits[0, -1]
        expected = torch.softmax(logits[scorer.label_ids].float(), dim=-1).numpy()
        np.testing.assert_allclose(probs[0, j], expected, atol=1e-5)


def test_every_dimension_is_asked_with_the_caption(fixtures_dir):
    """LiFT's fixed prompt is the caption followed by the question, for all three dimensions (the real
    annotations hold a caption before every question). So fidelity and motion scores depend on the
    caption too, and a score can only be reused for the same (video, caption)."""
    import json

    from lift_core.critic.prompts import build_user_text
    from lift_core.domain import QUESTIONS, dimension_of_question

    seen = set()
    for entry in json.loads((fixtures_dir / "annotations/vidgen-data.json").read_text()):
        human = entry["conversations"][0]["value"]
        dim = dimension_of_question(human)
        before = " ".join(human.replace("<video>", " ", 1).split()).split(" ".join(QUESTIONS[dim].split()))[0]
        assert len(before.strip()) > 10, human[:200]  # a caption precedes the question
        seen.add(dim)
    assert seen == set(DIMENSIONS)
    for d in DIMENSIONS:
        assert build_user_text("a red ball", d) == f"a red ball {QUESTIONS[d]}"


def test_rows_rewards_and_rationales(scorer):
    videos = random_videos(2, seed=1)
    meta = [{"video_id": f"v{i}", "uri": f"u{i}", "caption": c, "source": "generated"} for i, c in enumerate(CAPTIONS[:2])]
    plain = scorer.score_rows(meta, videos, rationale=False)
    with_reasons = scorer.score_rows(meta, videos, rationale=True)
    values = np.array([CriticConfig().label_values[label] for label in LABELS])
    lift = ScoreConfig().lift_values
    for p, r in zip(plain, with_reasons):
        for d in DIMENSIONS:
            dist = np.array([p[f"p_good_{d}"], p[f"p_normal_{d}"], p[f"p_bad_{d}"]])
            assert p[f"reward_{d}"] == pytest.approx(float(dist @ values))
            assert p[f"label_{d}"] == LABELS[int(dist.argmax())]
            assert p[f"reason_{d}"] is None and isinstance(r[f"reason_{d}"], str)
            # One prefill gives both: the rationale pass reads the same first-position probabilities.
            assert r[f"p_good_{d}"] == pytest.approx(p[f"p_good_{d}"], abs=1e-5)
            assert r[f"label_{d}"] == p[f"label_{d}"]
        assert p["reward"] == pytest.approx(np.mean([p[f"reward_{d}"] for d in DIMENSIONS]))
        assert p["reward_lift"] == pytest.approx(np.mean([lift[p[f"label_{d}"]] for d in DIMENSIONS]))
        assert p["critic_id"] == scorer.critic_id


def test_real_fixture_videos_score_without_error(scorer, fixtures_dir):
    from lift_core.critic.scoring import rows_to_scores_table, score_videos

    uris = [str(fixtures_dir / "lift-demo/0.mp4"), str(fixtures_dir / "lift-demo/1.mp4")]
    rows = score_videos(scorer, uris, ["a crane in a wetland", "a panda in a spacesuit"])
    assert [r["uri"] for r in rows] == uris
    assert [r["video_id"] for r in rows] == [storage.content_id(u) for u in uris]
    table = rows_to_scores_table(rows)
    assert table.schema == SCORES_SCHEMA
    for r in rows:
        assert 0.0 <= r["reward"] <= 1.0
        assert min(abs(r["reward_lift"] - v) for v in _lift_means()) < 1e-9


def _lift_means() -> list[float]:
    import itertools

    vals = ScoreConfig().lift_values.values()
    return [float(np.mean(c)) for c in itertools.product(vals, repeat=3)]


# --------------------------------------------------------------------------- Ray Data, resume, stage
def write_inputs(root, n_frames: int, extra_without_frames: int = 1, corrupt: bool = False) -> tuple[str, str]:
    """Frames shards for ``n_frames`` videos and a manifest that also lists videos without frames
    (and, with ``corrupt``, one more video whose stored frames are not an array)."""
    videos = random_videos(n_frames, seed=7)
    rows = [{"video_id": f"vid{i:03d}", "frames": v, "frame_indices": list(range(8)), "num_frames_total": 8,
             "fps": 8.0} for i, v in enumerate(videos)]
    for k in range(0, n_frames, 3):
        storage.write_table(str(root / "frames" / f"part-{k:03d}.parquet"), frames_table(rows[k:k + 3]))
    n = n_frames + extra_without_frames
    if corrupt:
        bad = frames_table(rows[:1]).to_pylist()[0]
        bad.update(video_id=f"vid{n:03d}", frames=b"\x93NUMPY garbage")
        storage.write_table(str(root / "frames" / "part-bad.parquet"), pa.Table.from_pylist([bad], frames_schema()))
        n += 1
    manifest = [{"video_id": f"vid{i:03d}", "uri": f"/videos/{i}.mp4", "caption": CAPTIONS[i % 3],
                 "source": "generated" if i % 2 else "hd-vila", "split": "test"}
                for i in range(n)]
    storage.write_table(str(root / "manifest.parquet"), rows_to_table(manifest, MANIFEST_SCHEMA))
    return str(root / "manifest.parquet"), str(root / "frames")


def pipeline_config(root, base: str, **score) -> PipelineConfig:
    return PipelineConfig(run_root=str(root), critic=CriticConfig(model=base, build_tiny=TINY),
                          score=ScoreConfig(batch_size=2, rows_per_shard=2, **score))


CHILD = textwrap.dedent(
    """
    import sys, time
    from lift_core.config import CriticConfig, PipelineConfig, RayConfig, ScoreConfig
    from lift_core.critic.score_stage import score_manifests

    address, root, manifest, frames, adapter, base, out = sys.argv[1:]
    cfg = PipelineConfig(run_root=root, ray=RayConfig(address=address), critic=CriticConfig(model=base),
                         score=ScoreConfig(batch_size=2, rows_per_shard=2))

    def progress(fraction, message):
        if message.startswith("scored"):  # a shard is on disk: wait here to be killed
            print("SHARD", flush=True)
            time.sleep(600)

    score_manifests(cfg, [manifest], [frames], adapter, out, model=base, progress=progress)
    print("FINISHED", flush=True)
    """
)


@pytest.mark.slow
def test_killed_run_restarts_and_scores_every_video_exactly_once(ray_session, ray_address, tmp_path, tiny_critic):
    from lift_core.critic.score_stage import score_manifests
    from lift_core.distributed.scoring_pool import shards_dir_for

    base, adapter = tiny_critic
    manifest, frames = write_inputs(tmp_path, 7, extra_without_frames=0)
    out = str(tmp_path / "scores.parquet")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, ray_address, str(tmp_path), manifest, frames, adapter, base, out],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        line = ""
        while time.time() < deadline and line.strip() != "SHARD":
            line = child.stdout.readline()
            if not line and child.poll() is not None:
                break
        assert line.strip() == "SHARD", "the child never wrote a shard"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    shards = [p for p in os.listdir(shards_dir_for(out)) if p.endswith(".parquet")]
    assert len(shards) == 1 and not os.path.exists(out)  # killed mid-run: one shard, no output yet

    res = score_manifests(pipeline_config(tmp_path, base), [manifest], [frames], adapter, out, model=base)
    assert res["counts"]["resumed"] == 2 and res["counts"]["scored"] == 5
    ids = pq.read_table(out, columns=["video_id"]).column("video_id").to_pylist()
    assert sorted(ids) == [f"vid{i:03d}" for i in range(7)]  # every video exactly once


def test_run_score_stage_quarantines_summarises_and_resumes(ray_session, tmp_path, tiny_critic):
    from lift_core.critic.score_stage import run_score, score_manifests
    from lift_core.distributed.scoring_pool import shards_dir_for

    base, adapter = tiny_critic
    # vid005 is in the manifest but has no frames; vid006's stored frames are garbage.
    manifest, frames = write_inputs(tmp_path, 5, corrupt=True)
    cfg = pipeline_config(tmp_path, base)
    calls = []
    res = run_score(cfg, [manifest], [frames], adapter, progress=lambda f, m: calls.append((f, m)))
    assert res.stage == "score" and set(res.outputs) == {"scores", "quarantine"}
    assert res.counts == {"videos": 7, "pairs": 7, "scored": 5, "resumed": 0, "quarantined": 2, "rows": 5}
    quarantine = {q["video_id"]: q for q in pq.read_table(res.outputs["quarantine"]).to_pylist()}
    assert set(quarantine) == {"vid005", "vid006"} and {q["stage"] for q in quarantine.values()} == {"score"}
    assert "no decoded frames" in quarantine["vid005"]["error"]
    assert "unusable frames" in quarantine["vid006"]["error"] and quarantine["vid006"]["uri"] == "/videos/6.mp4"
    table = pq.read_table(res.outputs["scores"])
    assert table.schema == SCORES_SCHEMA
    assert sorted(table.column("video_id").to_pylist()) == [f"vid{i:03d}" for i in range(5)]
    assert set(table.column("critic_id").to_pylist()) == {res.metrics["critic_id"]}
    assert not os.path.exists(shards_dir_for(res.outputs["scores"]))  # compacted
    summary = {(r["source"], r["dimension"]): r for r in res.metrics["reward_summary"]}
    assert summary[("hd-vila", "semantic")]["n"] == 3 and summary[("generated", "overall")]["n"] == 2
    assert calls and calls[-1][0] == 1.0
    assert run_score(cfg, [manifest], [frames], adapter).to_dict() == res.to_dict()  # a rerun is a no-op

    # Scoring into the same output again skips every (video_id, critic_id) already there.
    again = score_manifests(cfg, [manifest], [frames], adapter, res.outputs["scores"])
    assert again["counts"]["scored"] == 0 and again["counts"]["resumed"] == 5
    assert [q["video_id"] for q in again["quarantine"]] == ["vid005", "vid006"]  # retried, quarantined again
    assert pq.read_table(res.outputs["scores"]).num_rows == 5
    # The source filter selects what is scored (nothing new for this critic here).
    only = score_manifests(pipeline_config(tmp_path, base, sources=["generated"]), [manifest], [frames], adapter,
                           res.outputs["scores"])
    assert only["counts"]["videos"] == 3 and only["counts"]["resumed"] == 2


def test_one_video_with_two_captions_is_scored_per_caption(ray_session, tmp_path, tiny_critic, scorer):
    """A video listed under two captions: decoded once, scored twice, each row exactly what the critic
    says for that (video, caption), all three dimensions included (every prompt holds the caption)."""
    from lift_core.critic.score_stage import score_manifests
    from lift_core.schemas import caption_id

    base, adapter = tiny_critic
    _, frames = write_inputs(tmp_path, 2, extra_without_frames=0)
    videos = random_videos(2, seed=7)  # what write_inputs stored
    listed = [("vid000", CAPTIONS[0]), ("vid000", CAPTIONS[1]), ("vid001", CAPTIONS[2]), ("vid000", f" {CAPTIONS[0]}  ")]
    manifest = str(tmp_path / "two-captions.parquet")
    storage.write_table(manifest, rows_to_table(
        [{"video_id": v, "uri": f"/videos/{v}.mp4", "caption": c, "source": "generated", "split": "test"}
         for v, c in listed], MANIFEST_SCHEMA))
    out = str(tmp_path / "scores.parquet")
    res = score_manifests(pipeline_config(tmp_path, base), [manifest], [frames], adapter, out, model=base)
    # The last entry makes the same prompt as the first (whitespace): one pair, not a second score.
    assert res["counts"] == {"videos": 2, "pairs": 3, "scored": 3, "resumed": 0, "quarantined": 0, "rows": 3}
    rows = {(r["video_id"], r["caption_id"]): r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == 3
    for vid, cap in listed[:3]:
        r = rows[(vid, caption_id(cap))]
        assert r["caption"] == cap
        alone, _ = scorer.score([videos[int(vid[-1])]], [cap], rationale=False)
        for j, d in enumerate(DIMENSIONS):
            got = [r[f"p_good_{d}"], r[f"p_normal_{d}"], r[f"p_bad_{d}"]]
            np.testing.assert_allclose(got, alone[0, j], atol=1e-4)
    a, b = rows[("vid000", caption_id(CAPTIONS[0]))], rows[("vid000", caption_id(CAPTIONS[1]))]
    assert abs(a["p_good_semantic"] - b["p_good_semantic"]) > 1e-6  # not the first caption's scores

    # A third caption for the same video later: only that pair is scored.
    more = str(tmp_path / "more.parquet")
    storage.write_table(more, rows_to_table(
        [{"video_id": "vid000", "uri": "/videos/vid000.mp4", "caption": "a green triangle", "source": "generated",
          "split": "test"}], MANIFEST_SCHEMA))
    again = score_manifests(pipeline_config(tmp_path, base), [manifest, more], [frames], adapter, out, model=base)
    assert (again["counts"]["scored"], again["counts"]["resumed"], again["counts"]["rows"]) == (1, 3, 4)
