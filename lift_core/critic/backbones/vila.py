"""The ``vila`` critic backbone: LiFT's released critic (LiFT-Critic-13b on VILA1.5-13b) in the pipeline.

``critic.backbone: vila`` with ``critic.model`` = a local VILA1.5 checkpoint directory and the adapter
= a LiFT-Critic LoRA directory (``adapter_config.json``, ``adapter_model.safetensors``,
``non_lora_trainables.bin``). The modules and the loading are in ``vila_model``; this module is what
LiFT's ``run_critic_13b.py`` does around them:

- the ``vicuna_v1`` conversation: ``"<system> USER: <frames><caption> <question> ASSISTANT:"``, where
  ``<frames>`` is ``"<image>\\n"`` once per frame (LiFT's image-token expansion; 8 frames from the
  decode stage, ``decode.frames``), or ``"<im_start><image><im_end>\\n"`` when the checkpoint's
  ``mm_use_im_start_end`` says so;
- tokenization chunk by chunk around ``<image>`` (``tokenizer_image_token``);
- frames resized to the vision tower's square input (``image_aspect_ratio: resize``; ``pad`` pads to a
  square with the mean colour first) and normalised by its image processor. ``decode.height`` and
  ``decode.width`` only set what the decode stage keeps: 384x384 keeps SigLIP-384's full input;
- the answer starts after ``"ASSISTANT: "``: the label tokens are those of ``" Good"``, ``" Normal"``,
  ``" Bad"`` (``answer_prefix``), and generation stops at ``</s>``.

LiFT samples answers at temperature 0.2; here the label comes from the label-token probabilities at
the first answer position (the same batched scorer as every backbone), and rationales are greedy.
Scoring only: training a VILA critic stays with LiFT's own scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from lift_core.critic.backbone import CriticBackbone, register_backbone

VICUNA_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the user's questions.")
VIDEO = "<video>"  # where the frames go in a prompt; expanded per video by ``encode``


def vicuna_v1(user: str) -> str:
    """LiFT's ``conv_templates["vicuna_v1"]`` with one user turn and the assistant's turn open."""
    return f"{VICUNA_V1_SYSTEM} USER: {user} ASSISTANT:"


@dataclass
class VilaProcessor:
    """The tokenizer (``llm/``), the vision tower's image processor and the checkpoint's config."""

    tokenizer: Any
    image_processor: Any
    config: dict[str, Any]

    @property
    def image_token(self) -> str:
        return "<im_start><image><im_end>" if self.config.get("mm_use_im_start_end") else "<image>"

    def pixel_values(self, video: np.ndarray) -> Any:
        """``[T, 3, S, S]`` float pixels of one uint8 ``[T, H, W, 3]`` video, as VILA's ``process_images``."""
        from PIL import Image

        ip = self.image_processor
        images = [Image.fromarray(frame) for frame in video]
        aspect = self.config.get("image_aspect_ratio")
        if aspect == "resize":
            size = getattr(ip, "crop_size", None) or ip.size
            # VILA passes (height, width) where PIL takes (width, height); the input is square.
            images = [im.resize((size["height"], size["width"]), Image.Resampling.BICUBIC) for im in images]
        elif aspect == "pad":
            fill = tuple(int(x * 255) for x in ip.image_mean)
            images = [_square(im, fill) for im in images]
        return ip(images=images, return_tensors="pt")["pixel_values"]


def _square(im: Any, fill: tuple[int, ...]) -> Any:
    from PIL import Image

    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    out = Image.new(im.mode, (side, side), fill)
    out.paste(im, ((side - w) // 2, (side - h) // 2))
    return out


class Vila(CriticBackbone):
    name: ClassVar[str] = "vila"
    end_of_turn: ClassVar[str] = "</s>"
    answer_prefix: ClassVar[str] = " "

    # ------------------------------------------------------------------ loading
    def load_processor(self, model: str) -> VilaProcessor:
        from transformers import AutoTokenizer, SiglipImageProcessor

        from lift_core.critic.backbones.vila_model import VilaCheckpoint

        ckpt = VilaCheckpoint.open(model)
        # As VILA's build_llm_and_tokenizer: the slow-tokenizer behaviour (legacy=False), right padding.
        tok = AutoTokenizer.from_pretrained(ckpt.llm, use_fast=False, legacy=False, padding_side="right")
        added = []
        if ckpt.get("mm_use_im_patch_token", True):
            added.append("<im_patch>")
        if ckpt.get("mm_use_im_start_end"):
            added += ["<im_start>", "<im_end>"]
        if added:
            tok.add_tokens(added, special_tokens=True)
        return VilaProcessor(tok, SiglipImageProcessor.from_pretrained(ckpt.vision_tower), ckpt.config)

    def load_model(self, model: str, device: Any, dtype: Any) -> Any:
        from lift_core.critic.backbones.vila_model import VilaCheckpoint, VilaModel

        ckpt = VilaCheckpoint.open(model)
        net = VilaModel.from_checkpoint(ckpt, device, dtype)
        # builder.py resizes the embeddings to the tokenizer after adding <im_patch> (and start/end);
        # VILA1.5 adds neither.
        if ckpt.get("mm_use_im_patch_token", True) or ckpt.get("mm_use_im_start_end"):
            size = len(self.load_processor(model).tokenizer)
            if size > net.llm.get_input_embeddings().weight.shape[0]:
                net.llm.resize_token_embeddings(size)
        return net

    def load_adapter(self, model: Any, adapter: str, device: Any, is_trainable: bool) -> Any:
        from lift_core.critic.backbones.vila_model import load_lift_adapter

        if is_trainable:
            raise NotImplementedError("the vila backbone scores with LiFT-Critic adapters; training one is not "
                                      "supported here (LiFT-Critic/train/train_critic_13b.sh trains them)")
        return load_lift_adapter(model, adapter).to(device)

    # ------------------------------------------------------------------ prompts and batches
    def chat_prompt(self, processor: Any, user_text: str) -> str:
        return vicuna_v1(VIDEO + user_text)

    def encode(
        self,
        processor: Any,
        videos: Sequence[np.ndarray],
        texts: Sequence[str],
        *,
        padding_side: str,
        frame_size: tuple[int, int] | None,
    ) -> dict[str, Any]:
        """Input ids with one ``IMAGE_TOKEN_INDEX`` per frame, and each distinct video's pixels once
        (the scorer asks three questions of every video): ``pixel_values`` ``[frames, 3, S, S]``,
        ``video_frames`` (start, count) per distinct video, ``row_video`` per row."""
        import torch

        from lift_core.critic.backbones.vila_model import expand_frames, pad_rows, tokenize_with_images

        if padding_side != "left":
            raise NotImplementedError("the vila backbone scores only (left-padded batches); it does not train")
        tok = processor.tokenizer
        index: dict[int, int] = {}
        pixels, spans, row_video, rows = [], [], [], []
        for video, text in zip(videos, texts):
            key = id(video)
            if key not in index:
                index[key] = len(spans)
                start = sum(n for _, n in spans)
                pixels.append(processor.pixel_values(video))
                spans.append((start, int(video.shape[0])))
            u = index[key]
            row_video.append(u)
            rows.append(tokenize_with_images(tok, expand_frames(text, VIDEO, spans[u][1], processor.image_token)))
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.unk_token_id or 0)
        input_ids, attention_mask = pad_rows(rows, pad, padding_side)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": torch.cat(pixels),
            "video_frames": torch.tensor(spans, dtype=torch.long),
            "row_video": torch.tensor(row_video, dtype=torch.long),
        }

    # ------------------------------------------------------------------ generation
    def generated_offset(self, inputs: dict[str, Any]) -> int:
        return 0  # VilaModel generates from embeddings: its sequences hold the new tokens only


register_backbone(Vila())
