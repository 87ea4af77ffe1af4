"""Qwen2-VL and Qwen2.5-VL critic backbones, and their tiny builds.

Both load as transformers-native video VLMs (``Qwen/Qwen2-VL-2B-Instruct``, ``Qwen/Qwen2.5-VL-3B-Instruct``
or a local directory). What is Qwen's own:

- frames are cut into 14 px patches merged 2x2, so frame sides are multiples of 28, and the
  temporal patch is 2 frames (an odd frame count is padded by repeating the last frame);
- the processor's default minimum pixel count would up-scale small frames (64 px -> about 316 px),
  so frames are sized explicitly;
- Qwen2.5-VL's temporal rotary embedding needs the time per frame (``second_per_grid_ts``);
- the chat turns are ``<|im_start|>role\\n...<|im_end|>\\n``.

The tiny build (``critic.build_tiny``) is a random model of the same architecture with a locally
trained byte-level BPE tokenizer and a minimal Qwen-style chat template.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lift_core.config import TinyCriticConfig
from lift_core.critic.backbone import register_backbone
from lift_core.critic.backbones.auto_vlm import AutoVideoVLM

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# A minimal Qwen-style template: each turn is <|im_start|>role\n...<|im_end|>\n; a video content
# item becomes <|vision_start|><|video_pad|><|vision_end|>, which the processor expands to one
# <|video_pad|> per merged video patch.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def mrope_section(head_dim: int) -> list[int]:
    """Qwen2-VL's temporal/height/width split of the rotary half-dimension (16:24:24 for head 128)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


class Qwen2VL(AutoVideoVLM):
    name: ClassVar[str] = "qwen2-vl"
    end_of_turn: ClassVar[str] = "<|im_end|>"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    patch_size: ClassVar[int] = 14
    merge_size: ClassVar[int] = 2
    temporal_patch_size: ClassVar[int] = 2

    def side_multiple(self) -> int:
        return self.patch_size * self.merge_size

    def video_kwargs(self, frame_size: tuple[int, int] | None) -> dict[str, Any]:
        """With ``frame_size``: frames are resized to exactly that size (rounded to multiples of
        patch*merge), never up-scaled to the processor's default minimum pixel count."""
        kwargs: dict[str, Any] = {"do_sample_frames": False}
        if frame_size is not None:
            m = self.side_multiple()
            h = max(m, round(frame_size[0] / m) * m)
            w = max(m, round(frame_size[1] / m) * m)
            kwargs["size"] = {"shortest_edge": h * w, "longest_edge": h * w}
            kwargs["cap_pixels_per_frame"] = False  # the size is explicit: no total-pixel budget applies
        return kwargs

    def prepare_video(self, video: np.ndarray) -> np.ndarray:
        short = -video.shape[0] % self.temporal_patch_size
        if short:  # repeat the last frame, as the processor would
            video = np.concatenate([video, np.repeat(video[-1:], short, axis=0)], axis=0)
        return video

    # ------------------------------------------------------------------ tiny build
    def tiny_vision_config(self, cfg: TinyCriticConfig) -> dict[str, Any]:
        return {
            "depth": cfg.vision_depth,
            "embed_dim": cfg.vision_embed_dim,
            "hidden_size": cfg.hidden_size,  # the merger's output: the text model's width
            "num_heads": cfg.vision_num_heads,
            "mlp_ratio": cfg.vision_mlp_ratio,
        }

    def tiny_classes(self) -> tuple[type, type, type]:
        """(config, model, processor) classes of the family."""
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

        return Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    def tiny_config(self, cfg: TinyCriticConfig, tokenizer: Any) -> Any:
        """The family's model config of the tiny sizes, with the tokenizer's special ids."""
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError("critic.build_tiny.hidden_size must be a multiple of num_attention_heads")
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        text = {
            "vocab_size": len(tokenizer),
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "max_position_embeddings": cfg.max_position_embeddings,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta,
                                "mrope_section": mrope_section(head_dim)},
            "bos_token_id": ids["<|im_start|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        }
        patches = {"patch_size": self.patch_size, "spatial_merge_size": self.merge_size,
                   "temporal_patch_size": self.temporal_patch_size}
        config_cls = self.tiny_classes()[0]
        return config_cls(
            text_config=text,
            vision_config={**self.tiny_vision_config(cfg), **patches},
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=cfg.tie_word_embeddings,
        )

    def build_tiny(self, cfg: TinyCriticConfig) -> tuple[Any, Any]:
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        from lift_core.critic.builder import train_tokenizer

        tokenizer = train_tokenizer(cfg.vocab_size, SPECIAL_TOKENS, eos_token="<|im_end|>",
                                    pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)
        _, model_cls, processor_cls = self.tiny_classes()
        model = model_cls(self.tiny_config(cfg, tokenizer)).eval()
        processor = processor_cls(
            image_processor=Qwen2VLImageProcessor(),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(),
            chat_template=CHAT_TEMPLATE,
        )
        return model, processor


class Qwen25VL(Qwen2VL):
    name: ClassVar[str] = "qwen2.5-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    # The time step per frame the processor is told about: it becomes ``second_per_grid_ts``.
    default_fps: ClassVar[float] = 2.0

    def video_kwargs(self, frame_size: tuple[int, int] | None) -> dict[str, Any]:
        return {**super().video_kwargs(frame_size), "fps": self.default_fps}

    def tiny_vision_config(self, cfg: TinyCriticConfig) -> dict[str, Any]:
        return {
            "depth": cfg.vision_depth,
            "hidden_size": cfg.vision_embed_dim,
            "intermediate_size": cfg.vision_embed_dim * cfg.vision_mlp_ratio,
            "num_heads": cfg.vision_num_heads,
            "out_hidden_size": cfg.hidden_size,  # the merger's output: the text model's width
            "fullatt_block_indexes": [cfg.vision_depth - 1],
            "window_size": 112,
            "tokens_per_second": 4,
        }

    def tiny_classes(self) -> tuple[type, type, type]:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

        return Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor


register_backbone(Qwen2VL())
register_backbone(Qwen25VL())
