"""Align stage: dataset weighting, a run killed after a checkpoint and resumed under another world size
(with every latent and embedding from the cache), and the LoRA loaded back with load_lora_weights."""

from __future__ import annotations

import pytest
import torch

from lift_core import storage
from lift_core.schemas import SCORES_SCHEMA, rows_to_table
from lift_core.t2v.align_stage import build_dataset, latest_checkpoint, run_align


def test_dataset_weights_filters_and_quarantine(t2v_cfg, generated, real_manifest, scores_uri, t2v_root):
    cfg = t2v_cfg.model_copy(deep=True)
    cfg.align.min_reward = 0.3
    cfg.align.real_scale = 0.5
    manifests = [generated.outputs["generated"], real_manifest]
    scores = storage.read_table(scores_uri).to_pylist()
    stray = {**scores[0], "video_id": "0123456789abcdef", "uri": "/nowhere.mp4"}
    uri = str(t2v_root / "scores-with-stray.parquet")
    storage.write_table(uri, rows_to_table(scores + [stray], SCORES_SCHEMA))

    samples, quarantine, counts = build_dataset(cfg, uri, manifests)
    assert [q["video_id"] for q in quarantine] == ["0123456789abcdef"] and "none of the manifests" in quarantine[0]["error"]
    by_id = {s["video_id"]: s for s in samples}
    assert all(s["reward"] >= 0.3 for s in samples) and counts["below_min_reward"] >= 1
    assert counts["samples_hd-vila"] == 2 and counts["samples_generated"] == len(samples) - 2
    for s in scores:
        if s["video_id"] in by_id:
            scale = 0.5 if s["source"] == "hd-vila" else 1.0
            assert by_id[s["video_id"]]["weight"] == pytest.approx(s["reward"] * scale)

    cfg.align.weighting = "uniform"  # the ablation: the same samples, weight 1 (times real_scale)
    uniform, _, _ = build_dataset(cfg, uri, manifests)
    assert [s["video_id"] for s in uniform] == [s["video_id"] for s in samples]
    assert {s["weight"] for s in uniform if s["source"] == "generated"} == {1.0}
    assert {s["weight"] for s in uniform if s["source"] == "hd-vila"} == {0.5}

    cfg.align.weighting = "reward"
    cfg.align.use_real = False
    samples, _, counts = build_dataset(cfg, uri, manifests)
    assert {s["source"] for s in samples} == {"generated"} and counts["other_sources"] == 2


@pytest.mark.slow
def test_align_killed_after_checkpoint_resumes_on_two_workers(ray_session, t2v_cfg, scores_uri, generated,
                                                             real_manifest, kill_worker_at_step, tmp_path):
    manifests = [generated.outputs["generated"], real_manifest]
    cfg = t2v_cfg  # 4 steps, global batch 2, a checkpoint every 2 steps, 1 worker

    # The worker process dies right before step 3 (once: a rerun goes on).
    with pytest.raises(RuntimeError, match="rerun to resume from the last checkpoint \\(step 2"):
        run_align(cfg, scores_uri, manifests, callbacks=[kill_worker_at_step(3)])

    # Rerun with 2 workers (DDP over gloo): the same stage (world size is not part of its key) resumes.
    cfg2 = cfg.model_copy(deep=True)
    cfg2.align.train.num_workers = 2
    res = run_align(cfg2, scores_uri, manifests)
    assert latest_checkpoint(res.out_uri)[0] == 4
    assert res.counts["resumed_from_step"] == 2
    # Every latent and embedding came from the cache filled by the first (1-worker) attempt.
    assert res.counts["cache_videos_encoded"] == 0 and res.counts["cache_texts_encoded"] == 0
    assert res.counts["cache_videos_hit"] == res.counts["samples"] == 8

    log = storage.read_table(res.outputs["train_log"]).to_pylist()
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert [r["world_size"] for r in log] == [1, 1, 2, 2]
    assert [r["samples_seen"] for r in log] == [2, 4, 6, 8]
    for r in log:
        assert r["loss"] > 0 and 0 < r["mean_weight"] <= 1 and r["lr"] == pytest.approx(cfg.align.train.lr)
    assert run_align(cfg2, scores_uri, manifests) == res  # finished: a rerun is a no-op

    # An uninterrupted 1-worker run (own run root, same model) takes exactly the same steps.
    ref_cfg = cfg.model_copy(deep=True)
    ref_cfg.run_root = str(tmp_path / "uninterrupted")
    ref_cfg.align.cache_root = str(tmp_path / "uninterrupted" / "cache")
    ref = run_align(ref_cfg, scores_uri, manifests)
    ref_log = storage.read_table(ref.outputs["train_log"]).to_pylist()
    for column in ("loss", "loss_unweighted", "mean_weight", "lr"):
        assert [r[column] for r in log] == pytest.approx([r[column] for r in ref_log], rel=1e-5), column

    # The output is a diffusers LoRA: CogVideoXPipeline.load_lora_weights loads it and changes the model.
    from diffusers import CogVideoXPipeline

    from lift_core.t2v.builder import ensure_t2v_base

    pipe = CogVideoXPipeline.from_pretrained(ensure_t2v_base(cfg))
    x = torch.randn(1, 3, 4, 4, 4)
    text = torch.randn(1, cfg.t2v.max_sequence_length, 32)
    t = torch.tensor([500])
    with torch.no_grad():
        base = pipe.transformer(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]
        pipe.load_lora_weights(res.outputs["lora"], adapter_name="aligned")
        aligned = pipe.transformer(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]
    assert not torch.allclose(base, aligned)
    # ... and it holds exactly the final checkpoint's adapter weights.
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load

    ck = latest_checkpoint(res.out_uri)[1]
    saved = load(storage.read_bytes(storage.join(ck, "trainable.safetensors")))
    loaded = get_peft_model_state_dict(pipe.transformer, adapter_name="aligned")
    assert set(saved) == set(loaded) and saved
    for k in saved:
        assert torch.allclose(saved[k], loaded[k]), k


def test_align_refuses_uneven_batches_and_empty_data(t2v_cfg, scores_uri, generated, real_manifest, t2v_root):
    cfg = t2v_cfg.model_copy(deep=True)
    cfg.align.train.num_workers = 3
    with pytest.raises(ValueError, match="divide evenly"):
        run_align(cfg, scores_uri, [generated.outputs["generated"], real_manifest])
    cfg = t2v_cfg.model_copy(deep=True)
    cfg.align.min_reward = 2.0
    with pytest.raises(ValueError, match="no usable training samples"):
        run_align(cfg, scores_uri, [generated.outputs["generated"], real_manifest])
    missing = str(t2v_root / "no-scores.parquet")
    with pytest.raises(FileNotFoundError):
        run_align(t2v_cfg, missing, [real_manifest])


def test_one_video_under_two_captions_is_two_samples_with_their_own_rewards(t2v_cfg, real_manifest, t2v_root,
                                                                           make_score_rows):
    """Issue 18: a score belongs to (video, caption); the same video scored under two captions trains twice,
    each caption with its own reward, never one caption's reward for both."""
    from lift_core.schemas import MANIFEST_SCHEMA

    real = storage.read_table(real_manifest).to_pylist()[:1]
    other = {**real[0], "caption": "the same video, described otherwise"}
    manifest = str(t2v_root / "two-captions.parquet")
    storage.write_table(manifest, rows_to_table(real + [other], MANIFEST_SCHEMA))
    scores = str(t2v_root / "two-captions-scores.parquet")
    storage.write_table(scores, rows_to_table(make_score_rows(real + [other], [0.9, 0.3]), SCORES_SCHEMA))
    samples, quarantine, _ = build_dataset(t2v_cfg, scores, [manifest])
    assert not quarantine
    assert sorted((s["caption"], s["reward"]) for s in samples) == [
        ("a real video", 0.9), ("the same video, described otherwise", 0.3)]
