"""The tiny CogVideoX pipeline: a normal diffusers directory with a real T5 tokenizer and 2b's scheduler."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lift_core.t2v.builder import COGVIDEOX_2B_SCHEDULER, ensure_t2v_base, is_hub_id, load_t5_tokenizer


def test_tiny_pipeline_loads_through_from_pretrained(tiny_t2v, t2v_cfg):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline
    from transformers import T5Tokenizer

    for sub in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert os.path.isdir(os.path.join(tiny_t2v, sub)), sub
    pipe = CogVideoXPipeline.from_pretrained(tiny_t2v)
    assert isinstance(pipe.scheduler, CogVideoXDDIMScheduler)
    for k, v in COGVIDEOX_2B_SCHEDULER.items():
        assert pipe.scheduler.config[k] == v, k
    # The trained sentencepiece vocabulary, not the 4-token fallback of T5Tokenizer(vocab_file=...).
    assert isinstance(pipe.tokenizer, T5Tokenizer)
    assert len(pipe.tokenizer) > 300
    ids = pipe.tokenizer("two red circles moving left").input_ids
    assert ids[-1] == pipe.tokenizer.eos_token_id and 2 not in ids  # no <unk>
    assert pipe.tokenizer.decode(ids, skip_special_tokens=True) == "two red circles moving left"
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    assert pipe.transformer.config.max_text_seq_length == t2v_cfg.t2v.max_sequence_length
    out = pipe(prompt="one blue square moving up", height=32, width=32, num_frames=9, num_inference_steps=2,
               guidance_scale=1.0, max_sequence_length=32, output_type="np")
    assert np.asarray(out.frames).shape == (1, 9, 32, 32, 3)


def test_vocab_file_pitfall_is_caught(tiny_t2v, tmp_path):
    """T5Tokenizer(vocab_file=...) ignores the file; our loader reads the directory and checks the size."""
    from transformers import T5Tokenizer

    spiece = os.path.join(tiny_t2v, "tokenizer", "spiece.model")
    ignored = T5Tokenizer(vocab_file=spiece)  # the pitfall PROBES.md measured: 4 tokens (+ 100 sentinels)
    assert len(ignored) - 100 < 10
    loaded = load_t5_tokenizer(os.path.dirname(spiece))
    assert len(loaded) > 300 and loaded("red circles").input_ids != ignored("red circles").input_ids


def test_ensure_t2v_base_builds_once(t2v_cfg, tiny_t2v):
    before = os.path.getmtime(os.path.join(tiny_t2v, "transformer", "diffusion_pytorch_model.safetensors"))
    assert ensure_t2v_base(t2v_cfg) == tiny_t2v
    assert os.path.getmtime(os.path.join(tiny_t2v, "transformer", "diffusion_pytorch_model.safetensors")) == before


def test_missing_model_without_build_tiny_is_a_clear_error(t2v_cfg, tmp_path):
    cfg = t2v_cfg.model_copy(deep=True)
    cfg.t2v.model = str(tmp_path / "nowhere")
    cfg.t2v.build_tiny = None
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        ensure_t2v_base(cfg)


def test_hub_ids_and_bad_shapes(t2v_cfg):
    from lift_core.t2v.spec import get_spec

    assert is_hub_id("THUDM/CogVideoX-2b") and not is_hub_id("/abs/dir") and not is_hub_id("s3://b/m")
    spec = get_spec("cogvideox")
    with pytest.raises(ValueError, match="4k\\+1"):
        spec.check_shape(32, 32, 8)
    with pytest.raises(ValueError, match="multiples of 16"):
        spec.check_shape(40, 32, 9)
    with pytest.raises(ValueError, match="unknown t2v.family"):
        get_spec("sora")


def test_changed_build_tiny_rebuilds_the_tiny_t2v(make_t2v_cfg, tmp_path):
    """A changed ``t2v.build_tiny`` (or video shape) rebuilds the model; before, the old one was silently used."""
    from safetensors.torch import load_file

    from lift_core.t2v.builder import BUILD_RECORD, built_record, ensure_t2v_base

    def transformer_weights(model_dir):
        return load_file(os.path.join(model_dir, "transformer", "diffusion_pytorch_model.safetensors"))

    cfg = make_t2v_cfg(tmp_path, f"t2v.model={tmp_path}/t2v")
    first = ensure_t2v_base(cfg)
    assert built_record(first)["build_tiny"]["seed"] == 0 and os.path.exists(os.path.join(first, BUILD_RECORD))
    before = transformer_weights(first)
    assert ensure_t2v_base(cfg) == first and transformer_weights(first).keys() == before.keys()

    reseeded = make_t2v_cfg(tmp_path, f"t2v.model={tmp_path}/t2v", "t2v.build_tiny.seed=1")
    assert ensure_t2v_base(reseeded) == first
    assert built_record(first)["build_tiny"]["seed"] == 1
    after = transformer_weights(first)
    assert any(not (after[k] == before[k]).all() for k in before)
