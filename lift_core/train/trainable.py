"""The trainable weights of a model, as checkpoints hold them: a peft adapter's or every weight."""

from __future__ import annotations

from typing import Any


def adapter_state(module: Any) -> dict[str, Any]:
    """LoRA matrices and ``modules_to_save`` copies of a peft-adapted module (PeftModel or diffusers)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(module).items()}


def load_adapter_state(module: Any, state: dict[str, Any]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(module, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"checkpoint adapter weights do not fit the model: {unexpected[:3]}")


def full_state(module: Any) -> dict[str, Any]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def load_full_state(module: Any, state: dict[str, Any]) -> None:
    module.load_state_dict(state)
