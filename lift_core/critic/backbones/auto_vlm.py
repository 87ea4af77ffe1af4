"""The base of critic backbones that transformers loads natively (``AutoProcessor`` + ``AutoModelForImageTextToText``).

Such a model takes its video through the processor (``processor(text=..., videos=...)``) and its
prompt through the processor's chat template with a ``{"type": "video"}`` content item. A family
says which ``model_type`` values it accepts and, where it has them, its video processor kwargs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from lift_core.critic.backbone import CriticBackbone


class AutoVideoVLM(CriticBackbone):
    """A video VLM with a transformers processor and a chat template that places the video."""

    # ``config.model_type`` values of this family: loading another model under this name fails.
    model_types: ClassVar[tuple[str, ...]] = ()

    def load_processor(self, model: str) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(model)

    def load_model(self, model: str, device: Any, dtype: Any) -> Any:
        from transformers import AutoModelForImageTextToText

        # AutoModel would give the model without its language-model head.
        net = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).to(device)
        model_type = getattr(net.config, "model_type", "")
        if self.model_types and model_type not in self.model_types:
            raise ValueError(
                f"critic {model}: model_type {model_type!r} is not a {self.name} model ({self.model_types})"
            )
        return net

    def messages(self, user_text: str) -> list[dict[str, Any]]:
        """The user turn: the video, then the text (LiFT's: the caption followed by the question)."""
        return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user_text}]}]

    def chat_prompt(self, processor: Any, user_text: str) -> str:
        return processor.apply_chat_template(self.messages(user_text), tokenize=False, add_generation_prompt=True)

    def video_kwargs(self, frame_size: tuple[int, int] | None) -> dict[str, Any]:
        """The processor's ``videos_kwargs`` for frames resized to ``frame_size`` (the family's own)."""
        return {}

    def prepare_video(self, video: np.ndarray) -> np.ndarray:
        """One uint8 ``[T, H, W, 3]`` video as the processor should receive it."""
        return video

    def encode(
        self,
        processor: Any,
        videos: Sequence[np.ndarray],
        texts: Sequence[str],
        *,
        padding_side: str,
        frame_size: tuple[int, int] | None,
    ) -> dict[str, Any]:
        tok = processor.tokenizer
        old_side = tok.padding_side
        tok.padding_side = padding_side
        try:
            enc = processor(text=list(texts), videos=[self.prepare_video(v) for v in videos], padding=True,
                            return_tensors="pt", videos_kwargs=self.video_kwargs(frame_size))
        finally:
            tok.padding_side = old_side
        return dict(enc)
