"""The ``vila`` backbone: a tiny VILA1.5 checkpoint with a LiFT-Critic adapter, written in the released layout.

The loader's first-token label logits are checked against a reference assembled plainly here from the
same files: the state dicts merged by hand (W + B A * alpha / r, the non-LoRA tensor), LiFT's prompt
built from LiFT's own strings, frames tokenized chunk by chunk, the 2x2 downsample written out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lift_core.config import DIMENSIONS, LABELS
from lift_core.domain import QUESTIONS
from vila_fixtures import SYSTEM, write_lift_adapter, write_tiny_vila

# LiFT's run_critic_13b.py: the caption, then the question with a leading space.
LIFT_QUESTIONS = {d: " " + QUESTIONS[d] for d in DIMENSIONS}


def _videos() -> list[np.ndarray]:
    rng = np.random.RandomState(0)
    return [rng.randint(0, 255, size=(8, 48, 64, 3), dtype=np.uint8),
            rng.randint(0, 255, size=(8, 30, 40, 3), dtype=np.uint8)]


CAPTIONS = ["a red circle moving left", "two blue squares jumping between random places"]


@pytest.fixture(scope="module")
def vila(tiny_vila):
    from lift_core.critic.backbone import load_critic

    torch.set_num_threads(1)
    return load_critic(tiny_vila["base"], tiny_vila["adapter"], backbone="vila", device="cpu", frame_size=None)


# --------------------------------------------------------------------------- the plain reference
def _read(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


class Reference:
    """VILA1.5 + LiFT's LoRA assembled by hand from the checkpoint files."""

    def __init__(self, base: str, adapter: str):
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

        base_p, adapter_p = Path(base), Path(adapter)
        cfg = json.loads((adapter_p / "adapter_config.json").read_text())
        scale = cfg["lora_alpha"] / cfg["r"]
        llm_sd = _read(base_p / "llm" / "model.safetensors")
        lora = _read(adapter_p / "adapter_model.safetensors")
        for key, a in lora.items():
            if ".lora_A." in key:
                b = lora[key.replace(".lora_A.", ".lora_B.")]
                name = key.removeprefix("base_model.model.llm.").replace(".lora_A.weight", ".weight")
                llm_sd[name] = llm_sd[name] + (b @ a) * scale
        self.llm = LlamaForCausalLM(LlamaConfig.from_pretrained(base_p / "llm")).eval()
        self.llm.load_state_dict(llm_sd)
        self.tower = SiglipVisionModel(SiglipVisionConfig.from_pretrained(base_p / "vision_tower")).eval()
        tower = _read(base_p / "vision_tower" / "model.safetensors")  # VILA's names: vision_model.*
        if not any(k.startswith("vision_model.") for k in self.tower.state_dict()):
            tower = {k.removeprefix("vision_model."): v for k, v in tower.items()}
        self.tower.load_state_dict(tower)
        self.proj = _read(base_p / "mm_projector" / "model.safetensors")
        non_lora = torch.load(adapter_p / "non_lora_trainables.bin", weights_only=True)
        for key, value in non_lora.items():
            self.proj[key.removeprefix("base_model.model.mm_projector.")] = value
        self.tok = AutoTokenizer.from_pretrained(base_p / "llm")

    def pixels(self, video: np.ndarray) -> torch.Tensor:
        from PIL import Image

        frames = [np.asarray(Image.fromarray(f).resize((42, 42), Image.Resampling.BICUBIC), dtype=np.float32)
                  for f in video]
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2) / 255.0
        return (x - 0.5) / 0.5

    def frame_tokens(self, video: np.ndarray) -> torch.Tensor:
        feats = self.tower(self.pixels(video), output_hidden_states=True).hidden_states[-2]  # cls_patch: all 9
        n, c = feats.shape[0], feats.shape[-1]
        g = F.pad(feats.reshape(n, 3, 3, c), (0, 0, 0, 1, 0, 1))  # 3x3 -> 4x4 with zeros
        # VILA's flat_square: token (b, c) = x[2c, 2b], x[2c, 2b+1], x[2c+1, 2b], x[2c+1, 2b+1]
        cells = [torch.cat([g[:, 2 * j, 2 * i], g[:, 2 * j, 2 * i + 1], g[:, 2 * j + 1, 2 * i],
                            g[:, 2 * j + 1, 2 * i + 1]], dim=-1) for i in range(2) for j in range(2)]
        x = torch.stack(cells, dim=1)
        p = self.proj
        x = F.layer_norm(x, (4 * c,), p["layers.1.weight"], p["layers.1.bias"])
        x = F.gelu(F.linear(x, p["layers.2.weight"], p["layers.2.bias"]))
        return F.linear(x, p["layers.4.weight"], p["layers.4.bias"])

    def prompt_ids(self, caption: str, dimension: str, frames: int) -> list[int]:
        qs = "<image>\n" * frames + caption + LIFT_QUESTIONS[dimension]
        prompt = f"{SYSTEM} USER: {qs} ASSISTANT:"
        chunks = prompt.split("<image>")
        ids = self.tok(chunks[0]).input_ids
        for chunk in chunks[1:]:
            ids += [-200] + self.tok(chunk).input_ids[1:]  # each chunk's own BOS dropped
        return ids

    @torch.no_grad()
    def last_logits(self, video: np.ndarray, caption: str, dimension: str) -> torch.Tensor:
        ids = self.prompt_ids(caption, dimension, len(video))
        frames = self.frame_tokens(video)
        embed = self.llm.get_input_embeddings()
        parts, k = [], 0
        for i in ids:
            if i == -200:
                parts.append(frames[k])
                k += 1
            else:
                parts.append(embed(torch.tensor([i])))
        return self.llm(inputs_embeds=torch.cat(parts)[None]).logits[0, -1]

    def label_ids(self) -> list[int]:
        return [self.tok.convert_tokens_to_ids("\u2581" + label) for label in LABELS]


# --------------------------------------------------------------------------- tests
def test_checkpoint_layout_is_vilas(tiny_vila):
    base = Path(tiny_vila["base"])
    cfg = json.loads((base / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaLlamaModel"] and cfg["model_type"] == "llava_llama"
    assert {"llm_cfg", "vision_tower_cfg", "mm_projector_cfg"} <= set(cfg)
    assert set(_read(base / "mm_projector" / "model.safetensors")) == {
        f"layers.{i}.{w}" for i in (1, 2, 4) for w in ("weight", "bias")}
    assert "vision_model.embeddings.patch_embedding.weight" in _read(base / "vision_tower" / "model.safetensors")
    assert (base / "llm" / "tokenizer.model").exists()


def test_first_token_label_logits_equal_the_plain_reference(vila, tiny_vila):
    from lift_core.critic.backbone import encode_batch

    ref = Reference(tiny_vila["base"], tiny_vila["adapter"])
    assert [vila.label_token_ids[label] for label in LABELS] == ref.label_ids()
    videos = _videos()
    rows = [(v, c, d) for v, c in zip(videos, CAPTIONS) for d in DIMENSIONS]
    inputs = encode_batch(vila, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    # One row per question, each video's frames once; every row has 8 image markers.
    assert inputs["pixel_values"].shape == (16, 3, 42, 42) and inputs["row_video"].tolist() == [0, 0, 0, 1, 1, 1]
    assert ((inputs["input_ids"] == -200).sum(dim=1) == 8).all()
    with torch.no_grad():
        got = vila.backbone.answer_logits(vila.model, inputs)
    ids = ref.label_ids()
    for i, (video, caption, dim) in enumerate(rows):
        want = ref.last_logits(video, caption, dim)
        torch.testing.assert_close(got[i, ids], want[ids], atol=2e-4, rtol=1e-4)
    # The adapter matters: without the LoRA and the non-LoRA tensor the logits differ.
    from lift_core.critic.backbone import load_critic

    bare = load_critic(tiny_vila["base"], None, backbone="vila", device="cpu", frame_size=None)
    with torch.no_grad():
        plain = bare.backbone.answer_logits(bare.model, inputs)
    assert not torch.allclose(plain[:, ids], got[:, ids], atol=1e-3)


def test_scorer_probabilities_and_rationales(vila):
    """The batched scorer's path and the rationale path agree on the label probabilities."""
    from lift_core.critic.backbone import encode_batch
    from lift_core.critic.scoring import _reason_of, label_probabilities, label_token_id_list

    videos = _videos()
    rows = [(v, c, d) for v, c in zip(videos, CAPTIONS) for d in DIMENSIONS]
    inputs = encode_batch(vila, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    ids = label_token_id_list(vila.label_token_ids)
    with torch.no_grad():
        forward = label_probabilities(vila.backbone.answer_logits(vila.model, inputs), ids)
        first, texts = vila.backbone.generate(vila.model, vila.processor, inputs, first_token_ids=ids,
                                              max_new_tokens=5)
    np.testing.assert_allclose(label_probabilities(first, ids), forward, atol=1e-5)
    labels = [LABELS[i] for i in forward.argmax(axis=1)]
    assert all(t.startswith(label) for t, label in zip(texts, labels))  # the forced first token, decoded
    assert all(isinstance(_reason_of(label, t), str) for label, t in zip(labels, texts))


def test_missing_mm_projector_is_named(tiny_vila, tmp_path):
    from lift_core.critic.backbone import load_critic
    from lift_core.critic.backbones.vila_model import VilaCheckpointError

    broken = tmp_path / "no-projector"
    shutil.copytree(tiny_vila["base"], broken)
    shutil.rmtree(broken / "mm_projector")
    with pytest.raises(VilaCheckpointError, match="no mm_projector"):
        load_critic(str(broken), None, backbone="vila", device="cpu")
    shutil.copytree(Path(tiny_vila["base"]) / "mm_projector", broken / "mm_projector")
    (broken / "mm_projector" / "model.safetensors").unlink()
    with pytest.raises(VilaCheckpointError, match="mm_projector: no weights"):
        load_critic(str(broken), None, backbone="vila", device="cpu")


def test_adapter_for_another_base_is_refused(tiny_vila, tmp_path):
    from lift_core.critic.backbone import load_critic
    from lift_core.critic.backbones.vila_model import VilaCheckpointError

    other = write_tiny_vila(tmp_path / "wider-base", hidden_size=96, intermediate_size=160)  # same family, wider
    adapter = write_lift_adapter(other, tmp_path / "wide-adapter")
    with pytest.raises(VilaCheckpointError, match=r"for another base .*llm\.model\.layers\.0\.mlp\.down_proj is 128->64 here, the adapter's LoRA is 160->96"):
        load_critic(tiny_vila["base"], str(adapter), backbone="vila", device="cpu")
    deeper = write_lift_adapter(Path(tiny_vila["base"]), tmp_path / "deep-adapter", layers=3)
    with pytest.raises(VilaCheckpointError, match=r"adapts llm\.model\.layers\.2\..* does not have"):
        load_critic(tiny_vila["base"], str(deeper), backbone="vila", device="cpu")


class NotATensor:  # pickled by reference: weights_only refuses to rebuild it
    pass


def test_pickle_that_weights_only_refuses(tiny_vila, tmp_path):
    from lift_core.critic.backbone import load_critic
    from lift_core.critic.backbones.vila_model import VilaCheckpointError

    adapter = write_lift_adapter(Path(tiny_vila["base"]), tmp_path / "pickled")
    torch.save({"base_model.model.mm_projector.layers.1.bias": NotATensor()}, adapter / "non_lora_trainables.bin")
    with pytest.raises(VilaCheckpointError, match=r"non_lora_trainables\.bin: torch\.load\(weights_only=True\) refused"):
        load_critic(tiny_vila["base"], str(adapter), backbone="vila", device="cpu")
    torch.save({"base_model.model.not_a_part.weight": torch.zeros(2)}, adapter / "non_lora_trainables.bin")
    with pytest.raises(VilaCheckpointError, match="name no weight"):
        load_critic(tiny_vila["base"], str(adapter), backbone="vila", device="cpu")


def test_vila_scores_only(vila):
    from lift_core.critic.backbone import encode_batch

    with pytest.raises(NotImplementedError, match="scores only"):
        encode_batch(vila, _videos()[:1], CAPTIONS[:1], DIMENSIONS[:1], answers=["Good. fine"])



def test_the_base_comes_from_the_config_for_score_and_rescore(tiny_vila, tmp_path):
    """LiFT's adapters record no base: the score stage and rescoring load them on ``critic.model``."""
    from lift_core.config import config_from_dict
    from lift_core.critic.backbone import critic_id
    from lift_core.critic.score_stage import stage_out
    from lift_core.rescore import resolve_critic

    cfg = config_from_dict({"run_root": str(tmp_path), "critic": {"backbone": "vila", "model": tiny_vila["base"]},
                            "rescore": {"critic": tiny_vila["adapter"]}})
    ref = resolve_critic(cfg)
    assert ref.model == tiny_vila["base"] and ref.critic_id == critic_id(tiny_vila["base"], tiny_vila["adapter"])
    other = cfg.model_copy(update={"critic": cfg.critic.model_copy(update={"model": str(tmp_path / "other")})})
    (tmp_path / "m.parquet").write_bytes(b"m")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "part-0.parquet").write_bytes(b"f")
    inputs = ([str(tmp_path / "m.parquet")], [str(tmp_path / "frames")], tiny_vila["adapter"])
    assert stage_out(cfg, *inputs)[0] != stage_out(other, *inputs)[0]
