"""The tiny critic builder, the backbone interface (loading, batches, label tokens), the backbone registry
and critic ids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lift_core.config import LABELS
from lift_core.critic.backbone import IGNORE_INDEX, critic_id, encode_batch, get_backbone, load_critic
from lift_core.critic.prompts import QUESTIONS

CAPTIONS = ["one red circle moving left", "three blue triangles moving up", "two green squares moving down"]


def _videos(n, frames=8, size=56, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 255, (frames, size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_built_dir_is_a_normal_model_dir(tiny_critic_dir, loaded_critic):
    names = set(os.listdir(tiny_critic_dir))
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    cfg = json.loads(open(os.path.join(tiny_critic_dir, "config.json")).read())
    assert cfg["model_type"] == "qwen2_vl"
    assert type(loaded_critic.model).__name__ == "Qwen2VLForConditionalGeneration"  # with its LM head
    tok = loaded_critic.processor.tokenizer
    for label in LABELS:
        assert len(tok(label, add_special_tokens=False)["input_ids"]) == 1
    ids = loaded_critic.label_token_ids
    assert set(ids) == set(LABELS) and len(set(ids.values())) == 3
    assert tok.convert_ids_to_tokens(ids["Good"]) == "Good"


def test_chat_template_puts_video_then_caption_then_question(loaded_critic):
    text = loaded_critic.backbone.prompt_text(loaded_critic.processor, CAPTIONS[0], "motion")
    assert text == ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
                    f"{CAPTIONS[0]} {QUESTIONS['motion']}<|im_end|>\n<|im_start|>assistant\n")


def test_frames_are_not_upscaled_and_odd_frames_are_padded(loaded_critic):
    inputs = encode_batch(loaded_critic, _videos(2, frames=7), CAPTIONS[:2], ["semantic", "fidelity"])
    # 7 frames -> 8 -> 4 temporal patches; 56 px -> 4x4 patches of 14 px (not the ~316 px default minimum).
    assert inputs["video_grid_thw"].tolist() == [[4, 4, 4], [4, 4, 4]]
    assert inputs["pixel_values_videos"].shape == (2 * 64, 3 * 2 * 14 * 14)
    assert "mm_token_type_ids" in inputs
    n_video = (inputs["input_ids"] == loaded_critic.model.config.video_token_id).sum(dim=1)
    assert n_video.tolist() == [16, 16]  # 64 patches / merge 2x2
    with pytest.raises(ValueError, match=r"uint8 \[T,H,W,3\]"):
        encode_batch(loaded_critic, [np.zeros((8, 56, 56), np.uint8)], CAPTIONS[:1], ["motion"])
    with pytest.raises(ValueError, match="3 captions"):
        encode_batch(loaded_critic, _videos(1), CAPTIONS, ["motion"])


def test_scoring_batch_is_left_padded_so_last_logits_are_the_first_answer_position(loaded_critic):
    videos = _videos(3)
    dims = ["semantic", "motion", "fidelity"]  # questions of different lengths: padding is needed
    batch = encode_batch(loaded_critic, videos, CAPTIONS, dims)
    assert (batch["attention_mask"][:, -1] == 1).all()
    assert (batch["attention_mask"][:, 0] == 0).any()
    with torch.no_grad():
        together = loaded_critic.model(**batch).logits[:, -1]
        for i in range(3):
            alone = loaded_critic.model(**encode_batch(loaded_critic, videos[i:i + 1], CAPTIONS[i:i + 1], dims[i:i + 1])).logits[:, -1]
            torch.testing.assert_close(together[i:i + 1], alone, rtol=1e-4, atol=1e-4)


def test_training_batch_masks_everything_but_the_answer(loaded_critic):
    answers = ["Good. The video matches the caption.", "Bad. The objects jump to random places between frames.",
               "Normal. The frames are blurred."]
    batch = encode_batch(loaded_critic, _videos(3), CAPTIONS, ["semantic", "motion", "fidelity"], answers)
    tok = loaded_critic.processor.tokenizer
    assert (batch["attention_mask"][:, 0] == 1).all()  # right padding
    for i, answer in enumerate(answers):
        kept = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX]
        assert tok.decode(kept) == answer + "<|im_end|>"
        assert kept[0].item() == loaded_critic.label_token_ids[answer.split(".")[0]]
    out = loaded_critic.model(**batch)
    assert torch.isfinite(out.loss)


def test_unknown_backbone_and_wrong_model_type(tiny_critic_dir):
    with pytest.raises(ValueError, match="unknown critic backbone"):
        get_backbone("llava-9000")
    with pytest.raises(ValueError, match="not a qwen2.5-vl model"):
        load_critic(tiny_critic_dir, backbone="qwen2.5-vl", device="cpu")


def _save_random_adapter(loaded, path, seed):
    from lift_core.config import LoraConfig
    from lift_core.critic.train import add_lora

    base = load_critic(loaded_path(loaded), device="cpu").model
    model = add_lora(base, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "fc1"], modules_to_save=["merger"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # LoRA B starts at zero: make the adapter change the outputs
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.save_pretrained(path)
    return model


def loaded_path(loaded):
    return loaded.model.config._name_or_path


def test_adapter_round_trips_with_identical_logits(loaded_critic, tmp_path):
    model = _save_random_adapter(loaded_critic, tmp_path / "adapter", seed=1)
    model.eval()
    reloaded = load_critic(loaded_path(loaded_critic), str(tmp_path / "adapter"), device="cpu")
    batch = encode_batch(reloaded, _videos(2), CAPTIONS[:2], ["semantic", "motion"])
    with torch.no_grad():
        a = model(**batch).logits
        b = reloaded.model(**batch).logits
        base = loaded_critic.model(**batch).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, base)  # the adapter (LoRA + the saved merger) is really applied


def test_critic_id_hashes_adapter_weights_and_base(loaded_critic, tiny_critic_dir, tmp_path):
    _save_random_adapter(loaded_critic, tmp_path / "a1", seed=1)
    _save_random_adapter(loaded_critic, tmp_path / "a2", seed=2)
    shutil.copytree(tmp_path / "a1", tmp_path / "elsewhere" / "a1-copy")
    id1 = critic_id(tiny_critic_dir, str(tmp_path / "a1"))
    assert len(id1) == 16 and int(id1, 16) >= 0
    assert id1 == critic_id(tiny_critic_dir, str(tmp_path / "elsewhere" / "a1-copy"))  # content, not path
    assert id1 != critic_id(tiny_critic_dir, str(tmp_path / "a2"))
    assert id1 != critic_id("Qwen/Qwen2-VL-2B-Instruct", str(tmp_path / "a1"))
    assert critic_id(tiny_critic_dir, None) != id1
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        critic_id(tiny_critic_dir, str(tmp_path))


def test_qwen25_vl_backbone_through_the_same_code(tmp_path, tiny_cfg):
    from lift_core.critic.builder import build_tiny_critic

    path = build_tiny_critic(str(tmp_path / "q25"), tiny_cfg.model_copy(update={"architecture": "qwen2.5-vl"}))
    loaded = load_critic(path, backbone="qwen2.5-vl", device="cpu", frame_size=(56, 56))
    assert type(loaded.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    videos = _videos(2)
    batch = encode_batch(loaded, videos, CAPTIONS[:2], ["semantic", "motion"])
    assert batch["second_per_grid_ts"].shape == (2,)  # Qwen2.5-VL's temporal rope needs the time step
    assert batch["video_grid_thw"].tolist() == [[4, 4, 4], [4, 4, 4]]
    with torch.no_grad():
        together = loaded.model(**batch).logits[:, -1]
        alone = loaded.model(**encode_batch(loaded, videos[1:], CAPTIONS[1:2], ["motion"])).logits[:, -1]
    torch.testing.assert_close(together[1:], alone, rtol=1e-4, atol=1e-4)


def test_changed_build_tiny_values_rebuild_the_tiny_critic(tmp_path, tiny_cfg):
    from lift_core.config import config_from_dict
    from lift_core.critic.builder import built_config, ensure_critic_base

    def config(**tiny):
        return config_from_dict({"run_root": str(tmp_path), "critic": {
            "model": str(tmp_path / "critic-base"), "build_tiny": tiny_cfg.model_dump() | tiny}})

    path = ensure_critic_base(config())
    first = os.path.getmtime(os.path.join(path, "model.safetensors"))
    assert ensure_critic_base(config()) == path
    assert os.path.getmtime(os.path.join(path, "model.safetensors")) == first  # same values: kept as is
    ensure_critic_base(config(num_hidden_layers=3))
    assert built_config(path)["num_hidden_layers"] == 3
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(path).text_config.num_hidden_layers == 3


# --------------------------------------------------------------------------- the registry
@pytest.fixture
def registered():
    """Registers the backbones a test builds, and forgets them after it."""
    from lift_core.critic.backbone import BACKBONES, register_backbone

    names = []

    def register(backbone):
        names.append(backbone.name)
        return register_backbone(backbone)

    yield register
    for name in names:
        BACKBONES.pop(name, None)


def test_a_registered_backbone_is_selectable_from_config(registered, tiny_critic_dir):
    from lift_core.config import config_from_dict
    from lift_core.critic.backbones.qwen2_vl import Qwen2VL

    class QuestionBeforeVideo(Qwen2VL):
        """Qwen2-VL, asked the caption and question before it sees the video."""

        name = "qwen2-vl-question-first"

        def messages(self, user_text):
            turn = super().messages(user_text)
            turn[0]["content"].reverse()
            return turn

    registered(QuestionBeforeVideo())
    cfg = config_from_dict({"critic": {"backbone": "qwen2-vl-question-first"}})
    loaded = load_critic(tiny_critic_dir, backbone=cfg.critic.backbone, device="cpu", frame_size=(56, 56))
    assert isinstance(loaded.backbone, QuestionBeforeVideo)
    text = loaded.backbone.prompt_text(loaded.processor, CAPTIONS[0], "motion")
    assert text == (f"<|im_start|>user\n{CAPTIONS[0]} {QUESTIONS['motion']}"
                    "<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")
    batch = encode_batch(loaded, _videos(2), CAPTIONS[:2], ["motion", "semantic"])
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padding: the same for every backbone
    with torch.no_grad():
        logits = loaded.backbone.answer_logits(loaded.model, batch)
    assert logits.shape == (2, loaded.model.config.get_text_config().vocab_size)
    # It inherits Qwen2-VL's tiny build, so it is also a tiny architecture.
    assert config_from_dict({"critic": {"build_tiny": {"architecture": "qwen2-vl-question-first"}}})


def test_unknown_names_fail_at_config_load_with_the_known_ones(registered):
    from lift_core.config import ConfigError, config_from_dict
    from lift_core.critic.backbones.auto_vlm import AutoVideoVLM

    class LlavaOneVision(AutoVideoVLM):
        """A transformers-native backbone with no tiny build."""

        name = "llava-onevision"
        end_of_turn = "<|im_end|>"
        model_types = ("llava_onevision",)

    with pytest.raises(ConfigError, match=r"critic\.backbone.*unknown critic backbone 'llava-onevision'; "
                                          r"known: \['qwen2-vl', 'qwen2\.5-vl', 'vila'\]"):
        config_from_dict({"critic": {"backbone": "llava-onevision"}})
    registered(LlavaOneVision())
    assert config_from_dict({"critic": {"backbone": "llava-onevision"}}).critic.backbone == "llava-onevision"
    with pytest.raises(ConfigError, match=r"critic backbone 'llava-onevision' cannot build a tiny model; "
                                          r"these can: \['qwen2-vl', 'qwen2\.5-vl'\]"):
        config_from_dict({"critic": {"build_tiny": {"architecture": "llava-onevision"}}})
    with pytest.raises(ConfigError, match=r"known: \['llava-onevision', 'qwen2-vl', 'qwen2\.5-vl', 'vila'\]"):
        config_from_dict({"critic": {"backbone": "qwen3-vl"}})
    with pytest.raises(ConfigError, match=r"t2v\.family.*unknown t2v\.family 'sora'; known: \['cogvideox'\]"):
        config_from_dict({"t2v": {"family": "sora"}})


def test_the_registry_loads_no_model_code_on_import():
    code = ("import sys; from lift_core.config import config_from_dict; "
            "config_from_dict({'critic': {'backbone': 'qwen2.5-vl'}, 't2v': {'family': 'cogvideox'}}); "
            "import lift_core.critic.backbone; "
            "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_label_token_rows_train_with_the_lora_tied_to_the_output_and_round_trip(tiny_cfg, tmp_path):
    """critic.train_label_tokens: the three label rows of a tied embedding train (in and out), no other row
    moves, and the saved adapter reproduces the trained logits."""
    from lift_core.config import LoraConfig
    from lift_core.critic.builder import build_tiny_critic
    from lift_core.critic.train import add_lora

    base_dir = build_tiny_critic(str(tmp_path / "tied"), tiny_cfg.model_copy(update={"tie_word_embeddings": True}))
    loaded = load_critic(base_dir, device="cpu")
    ids = [loaded.label_token_ids[label] for label in LABELS]
    before = loaded.model.get_input_embeddings().weight.detach().clone()
    model = add_lora(loaded.model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), ids)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    deltas = [p for n, p in trainable.items() if "trainable_tokens_delta" in n]
    assert len(deltas) == 1 and deltas[0].shape == (3, before.shape[1])
    assert all("lora_" in n or "trainable_tokens" in n for n in trainable)
    assert model.get_base_model().lm_head.token_adapter.tied_adapter is not None  # the output rows share it

    batch = encode_batch(loaded, _videos(2), CAPTIONS[:2], ["semantic", "motion"])
    with torch.no_grad():
        start = model(**batch).logits[:, -1].log_softmax(-1)[:, ids[0]].mean()
    opt = torch.optim.SGD(list(trainable.values()), lr=1.0)
    for _ in range(3):
        loss = -model(**batch).logits[:, -1].log_softmax(-1)[:, ids[0]].mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    assert trained[:, -1].log_softmax(-1)[:, ids[0]].mean() > start + 0.5  # "Good" became likely
    assert torch.equal(model.get_base_model().get_input_embeddings().token_adapter.base_layer.weight, before)  # base rows fixed
    assert deltas[0].abs().sum(1).gt(0).all()  # each label row moved

    model.save_pretrained(tmp_path / "adapter")
    reloaded = load_critic(base_dir, str(tmp_path / "adapter"), device="cpu")
    with torch.no_grad():
        assert torch.allclose(reloaded.model(**batch).logits, trained, atol=1e-5)
