"""A tiny random VILA1.5 checkpoint and LiFT-Critic adapter, written here in exactly the released layout.

Written with plain transformers / safetensors / torch calls, not with the loader under test, so a
wrong folder, config key or weight name in the loader fails the tests:

- ``<base>/config.json``: ``LlavaLlamaModel`` / ``llava_llama`` with ``llm_cfg``, ``vision_tower_cfg``,
  ``mm_projector_cfg`` and VILA1.5-13b's vision settings (layer -2, ``cls_patch``, ``resize``);
- ``<base>/llm/``: a ``LlamaForCausalLM`` and a sentencepiece ``tokenizer.model`` (LlamaTokenizer);
- ``<base>/vision_tower/``: a ``SiglipVisionModel`` (42 px, 14 px patches: 3x3 tokens, odd like 27x27)
  and its ``preprocessor_config.json``;
- ``<base>/mm_projector/``: ``mlp_downsample`` weights ``layers.{1,2,4}.*``;
- ``<adapter>/``: ``adapter_config.json`` (as LiFT's: no base recorded, ``CAUSAL_LM``), LoRA weights named
  as VILA's ``PeftModel`` saves them (``base_model.model.llm.model.layers.<i>....lora_A.weight``),
  ``non_lora_trainables.bin`` (``torch.save`` of a dict of tensors) and the training ``config.json``.

Used by ``tests/lift_core/critic/conftest.py`` and ``tests/flows/conftest.py``.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch

LLM = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "max_position_embeddings": 2048, "tie_word_embeddings": False}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 42, "patch_size": 14}
LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def write_llama_tokenizer(out: Path) -> None:
    """A sentencepiece BPE model as Llama's (unk 0, bos 1, eos 2, byte fallback) plus its tokenizer config."""
    import sentencepiece as spm

    from lift_core.critic.builder import tokenizer_corpus

    corpus = [*tokenizer_corpus(), *[f"{SYSTEM} USER: ASSISTANT: Good. Normal. Bad."] * 20]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=1000, model_type="bpe", unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, byte_fallback=True, character_coverage=1.0, num_threads=1, minloglevel=2,
        hard_vocab_limit=False, normalization_rule_name="identity", remove_extra_whitespaces=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": None, "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "model_max_length": 4096, "padding_side": "right", "clean_up_tokenization_spaces": False})
    _write_json(out / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})


def write_tiny_vila(base: Path, seed: int = 0, **llm: int) -> Path:
    """A random VILA1.5-layout checkpoint in ``base`` (``llm``: other LLM sizes than ``LLM``)."""
    import sentencepiece as spm
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    write_llama_tokenizer(base / "llm")
    vocab = spm.SentencePieceProcessor(model_file=str(base / "llm" / "tokenizer.model")).get_piece_size()
    llm_cfg = LlamaConfig(vocab_size=vocab, bos_token_id=1, eos_token_id=2, **{**LLM, **llm})
    LlamaForCausalLM(llm_cfg).save_pretrained(base / "llm")
    vt_cfg = SiglipVisionConfig(**VISION)
    SiglipVisionModel(vt_cfg).save_pretrained(base / "vision_tower")
    # VILA's files (transformers 4.x) name the tower's weights vision_model.*; newer versions drop that.
    tower = base / "vision_tower" / "model.safetensors"
    state = load_file(str(tower))
    save_file({k if k.startswith("vision_model.") else f"vision_model.{k}": v for k, v in state.items()},
              str(tower), metadata={"format": "pt"})
    SiglipImageProcessor(size={"height": 42, "width": 42}).save_pretrained(base / "vision_tower")
    c, h = VISION["hidden_size"], llm_cfg.hidden_size
    projector = {
        "layers.1.weight": 1 + 0.1 * torch.randn(4 * c), "layers.1.bias": 0.1 * torch.randn(4 * c),
        "layers.2.weight": torch.randn(h, 4 * c) / (4 * c) ** 0.5, "layers.2.bias": 0.1 * torch.randn(h),
        "layers.4.weight": torch.randn(h, h) / h**0.5, "layers.4.bias": 0.1 * torch.randn(h),
    }
    (base / "mm_projector").mkdir(parents=True)
    save_file(projector, str(base / "mm_projector" / "model.safetensors"), metadata={"format": "pt"})
    projector_cfg = {"architectures": ["MultimodalProjector"], "mm_projector_type": "mlp_downsample",
                     "model_type": "v2l_projector"}
    _write_json(base / "mm_projector" / "config.json", projector_cfg)
    _write_json(base / "config.json", {
        "architectures": ["LlavaLlamaModel"], "model_type": "llava_llama",
        "llm_cfg": {**llm_cfg.to_dict(), "_name_or_path": "./llm", "architectures": ["LlamaForCausalLM"]},
        "vision_tower_cfg": {**vt_cfg.to_dict(), "_name_or_path": "./vision_tower",
                             "architectures": ["SiglipVisionModel"]},
        "mm_projector_cfg": {**projector_cfg, "_name_or_path": "./mm_projector"},
        "hidden_size": h, "mm_hidden_size": c, "image_aspect_ratio": "resize", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "cls_patch", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "num_video_frames": 8, "model_dtype": "torch.bfloat16", "s2": False, "resume_path": str(base)})
    return base


def write_lift_adapter(base: Path, out: Path, *, seed: int = 1, r: int = 4, alpha: int = 8,
                       non_lora: dict[str, torch.Tensor] | None = None, layers: int | None = None) -> Path:
    """A LiFT-Critic-style LoRA adapter for ``base`` (random A and B, so it changes the logits)."""
    from safetensors.torch import save_file

    llm_cfg = json.loads((base / "llm" / "config.json").read_text())
    h, inter = llm_cfg["hidden_size"], llm_cfg["intermediate_size"]
    kv = h // llm_cfg["num_attention_heads"] * llm_cfg["num_key_value_heads"]
    sizes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
             "self_attn.o_proj": (h, h), "mlp.gate_proj": (h, inter), "mlp.up_proj": (h, inter),
             "mlp.down_proj": (inter, h)}
    g = torch.Generator().manual_seed(seed)
    weights, targets = {}, []
    for i in range(llm_cfg["num_hidden_layers"] if layers is None else layers):
        for name in LORA_TARGETS:
            size_in, size_out = sizes[name]
            path = f"llm.model.layers.{i}.{name}"
            targets.append(path)
            weights[f"base_model.model.{path}.lora_A.weight"] = torch.randn(r, size_in, generator=g) / size_in**0.5
            weights[f"base_model.model.{path}.lora_B.weight"] = torch.randn(size_out, r, generator=g) * 0.5
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "adapter_config.json", {
        "base_model_name_or_path": "", "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "lora_alpha": alpha, "lora_dropout": 0.05, "modules_to_save": None,
        "peft_type": "LORA", "r": r, "target_modules": targets, "task_type": "CAUSAL_LM", "use_dora": False,
        "use_rslora": False})
    torch.save(non_lora or {}, out / "non_lora_trainables.bin")
    shutil.copy(base / "config.json", out / "config.json")
    return out


@pytest.fixture(scope="session")
def tiny_vila(tmp_path_factory) -> dict[str, str]:
    """``{"base": VILA dir, "adapter": LiFT-Critic adapter dir}``; the adapter's non-LoRA file moves the
    projector's LayerNorm bias, saved under the key VILA's ``PeftModel`` gives it."""
    root = tmp_path_factory.mktemp("vila")
    base = write_tiny_vila(root / "VILA1.5-tiny")
    bias = 0.2 * torch.randn(4 * VISION["hidden_size"], generator=torch.Generator().manual_seed(3))
    adapter = write_lift_adapter(base, root / "LiFT-Critic-tiny-lora",
                                 non_lora={"base_model.model.mm_projector.layers.1.bias": bias})
    return {"base": str(base), "adapter": str(adapter), "root": str(root)}


def copy_tree(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


__all__ = ["tiny_vila", "write_tiny_vila", "write_lift_adapter", "copy_tree", "SYSTEM"]
