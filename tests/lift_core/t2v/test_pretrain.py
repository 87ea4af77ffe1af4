"""Pre-training of the tiny T2V (``t2v.pretrain``) and the held-out evaluation combinations."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lift_core import storage
from lift_core.config import SplitConfig, SyntheticConfig
from lift_core.video.synth import caption_split, caption_text, combinations, is_heldout, training_combinations, write_synthetic

PRETRAIN = [
    "t2v.pretrain.vae.max_steps=6", "t2v.pretrain.vae.batch_size=2", "t2v.pretrain.vae.checkpoint_every=3",
    "t2v.pretrain.vae.warmup_steps=0", "t2v.pretrain.denoiser.max_steps=3", "t2v.pretrain.denoiser.batch_size=2",
    "t2v.pretrain.denoiser.checkpoint_every=3", "t2v.pretrain.denoiser.warmup_steps=0",
    "t2v.pretrain.scaling_clips=4", "t2v.pretrain.cpus_per_worker=1",
]


def test_heldout_combinations_are_the_test_split_and_stay_out_of_training_data(tmp_path):
    from lift_core.data.ingest import assign_split

    split = SplitConfig()
    held = [c for c in combinations() if is_heldout(caption_text(*c), split)]
    assert len(held) >= 24  # the evaluation's held-out prompts (issue: at least 24)
    assert all(assign_split(caption_text(*c), split) == "test" for c in held)
    val = [c for c in combinations() if caption_split(caption_text(*c), split) == "val"]
    assert val and not set(val) & set(held)  # validation combinations choose alignment settings
    assert set(training_combinations(split)) == set(combinations()) - set(held) - set(val)

    out = write_synthetic(str(tmp_path), SyntheticConfig(n=0, n_real=12, n_prompts=10, height=32, width=32,
                                                         num_frames=5), split)
    prompts = [p["prompt_en"] for p in storage.read_json(out["prompts_json"])]
    assert len(prompts) == len(set(prompts)) == 10 + len(val) + len(held)
    # every validation caption (choosing settings) and every held-out one (the final figures)
    assert set(prompts[10:]) == {caption_text(*c) for c in val + held}
    assert not any(is_heldout(p, split) for p in prompts[:10])  # generation prompts show none
    assert all(caption_split(r["caption"], split) == "train" for r in storage.read_json(out["real_json"]))


def test_pretraining_clips_never_show_a_heldout_combination(make_t2v_cfg, tmp_path):
    from lift_core.t2v.pretrain import render_clips

    cfg = make_t2v_cfg(tmp_path)
    frames, captions = render_clips(cfg, range(200), seed=0)
    assert frames.shape == (200, cfg.t2v.num_frames, cfg.t2v.height, cfg.t2v.width, 3) and frames.dtype == np.uint8
    assert not any(is_heldout(c, cfg.data.split) for c in captions)
    assert len(set(captions)) > 50  # the whole training grammar, not a few captions
    again, _ = render_clips(cfg, [7, 3], seed=0)  # a clip is a function of (seed, position): resumable
    assert (again[0] == frames[7]).all() and (again[1] == frames[3]).all()


def test_reconstruction_adherence_reads_what_a_reconstruction_keeps_and_loses(make_t2v_cfg, tmp_path):
    from scipy.ndimage import gaussian_filter

    from lift_core.t2v.pretrain import reconstruction_adherence, render_clips

    cfg = make_t2v_cfg(tmp_path)
    frames, captions = render_clips(cfg, range(24), seed=3, stream="reconstruction")
    exact = reconstruction_adherence(frames, captions, lambda f: f)
    assert min(exact.values()) >= 0.9  # the oracle reads clean clips (its own validation: >= 0.95 on 200)

    def blobs(f):  # a decoder that draws every shape as a soft round blob, in place and in colour
        soft = gaussian_filter(f.astype(np.float64), sigma=(0, 0, 2.5, 2.5, 0))
        return np.clip(soft * (f.max() / max(soft.max(), 1e-6)), 0, 255).round().astype(np.uint8)

    blurred = reconstruction_adherence(frames, captions, blobs)
    assert blurred["colour"] >= 0.9 and blurred["direction"] >= 0.9
    assert blurred["shape"] <= exact["shape"] - 0.3  # shape is what blur loses
    with pytest.raises(ValueError, match="uint8"):
        reconstruction_adherence(frames, captions, lambda f: f.astype(np.float32))


def test_pretraining_trains_both_parts_records_it_and_rebuilds_on_change(make_t2v_cfg, tmp_path, ray_address):
    from safetensors.torch import load_file

    from lift_core.t2v.builder import built_record, ensure_t2v_base

    def weights(model_dir, part):
        name = "diffusion_pytorch_model.safetensors"
        return load_file(os.path.join(model_dir, part, name))

    plain = ensure_t2v_base(make_t2v_cfg(tmp_path, f"t2v.model={tmp_path}/plain"))
    cfg = make_t2v_cfg(tmp_path, f"t2v.model={tmp_path}/pre", f"ray.address={ray_address}", *PRETRAIN)
    model = ensure_t2v_base(cfg)
    record = built_record(model)
    assert record["pretrain"]["vae"]["max_steps"] == 6 and record["heldout_split"]["test"] == 0.2
    figures = record["pretrain_figures"]
    assert figures["scaling_factor"] > 0 and np.isfinite(figures["vae"]["loss_last"])
    assert set(figures["vae_reconstruction"]) == {"colour", "shape", "count", "direction", "overall"}
    assert all(0.0 <= v <= 1.0 for v in figures["vae_reconstruction"].values())
    # Both parts moved away from the same random initialisation (same build_tiny seed).
    for part in ("vae", "transformer"):
        a, b = weights(plain, part), weights(model, part)
        assert a.keys() == b.keys() and any(not (a[k] == b[k]).all() for k in a), part
    with open(os.path.join(model, "vae", "config.json")) as f:
        assert json.load(f)["scaling_factor"] == pytest.approx(figures["scaling_factor"])
    # The training runs (logs, checkpoints) live in the stage folder; the model loads as any other.
    stage = figures["stage_dir"]
    for name, steps in (("vae", 6), ("denoiser", 3)):
        assert storage.read_table(os.path.join(stage, name, "train_log.parquet")).num_rows == steps
    from lift_core.t2v.spec import get_spec

    spec = get_spec("cogvideox")
    pipe = spec.load_pipeline(model)
    import torch

    video = spec.generate(pipe, ["one red circle moving left"], [torch.Generator().manual_seed(0)], height=32,
                          width=32, num_frames=9, num_inference_steps=2, guidance_scale=1.0, max_sequence_length=32)
    assert video.shape == (1, 9, 32, 32, 3)

    # Built once: the same config finds it; a changed pre-training value rebuilds it.
    mtime = os.path.getmtime(os.path.join(model, "transformer", "diffusion_pytorch_model.safetensors"))
    assert ensure_t2v_base(cfg) == model
    assert os.path.getmtime(os.path.join(model, "transformer", "diffusion_pytorch_model.safetensors")) == mtime
    changed = make_t2v_cfg(tmp_path, f"t2v.model={tmp_path}/pre", f"ray.address={ray_address}", *PRETRAIN,
                           "t2v.pretrain.denoiser.lr=0.01")
    ensure_t2v_base(changed)
    assert built_record(model)["pretrain"]["denoiser"]["lr"] == 0.01
    assert built_record(model)["pretrain_figures"]["stage_dir"] != stage


def test_noisy_captions_flip_each_attribute_at_its_rate_and_stay_training_combinations(make_t2v_cfg, tmp_path):
    """Web captions are noisy: the denoiser stream's captions carry t2v.pretrain.caption_noise, the clips
    stay as rendered, and no caption is ever a validation or test combination."""
    from lift_core.t2v.pretrain import noisy_caption
    from lift_core.video.synth import caption_text

    split = SplitConfig()
    combos = training_combinations(split)
    allowed = set(combos)
    noise = {"colour": 0.5, "shape": 0.0, "count": 0.25}
    rng = np.random.RandomState(0)
    flips = {"count": 0, "colour": 0, "shape": 0, "direction": 0}
    n = 2000
    for i in range(n):
        combo = combos[i % len(combos)]
        caption = noisy_caption(rng, combo, noise, allowed)
        assert caption_split(caption, split) == "train"
        words = caption.split()
        said = (words[0], words[1], words[2].rstrip("s") if words[0] != "one" else words[2], words[4])
        for attr, a, b in zip(("count", "colour", "shape", "direction"), said, combo):
            flips[attr] += a != b and not (attr == "shape" and b.rstrip("s") == a)
    assert flips["shape"] == 0 and flips["direction"] == 0
    assert abs(flips["colour"] / n - 0.5) < 0.06 and abs(flips["count"] / n - 0.25) < 0.06
    assert noisy_caption(rng, combos[0], {}, allowed) == caption_text(*combos[0])

    cfg = make_t2v_cfg(tmp_path, "t2v.pretrain.caption_noise={colour: 0.9}")
    noisy, noisy_caps = render_clips_for(cfg, "denoiser")
    same, caps = render_clips_for(cfg, "denoiser")
    assert (same == noisy).all() and caps == noisy_caps  # a function of (seed, position): resumable
    plain = make_t2v_cfg(tmp_path)
    frames, captions = render_clips_for(plain, "denoiser")
    assert (frames == noisy).all()  # the clips stay as rendered; only captions change
    assert sum(a != b for a, b in zip(captions, noisy_caps)) > len(captions) // 2


def render_clips_for(cfg, stream):
    from lift_core.t2v.pretrain import render_clips

    return render_clips(cfg, range(40), seed=0, stream=stream)
