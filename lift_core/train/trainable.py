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
    """Every tensor of ``module``, each shared one once (tied embeddings: safetensors refuses aliases)."""
    out, seen = {}, set()
    for k, v in module.state_dict(keep_vars=True).items():
        ident = (v.data_ptr(), v.dtype, tuple(v.shape))
        if v.numel() and ident in seen:
            continue
        seen.add(ident)
        out[k] = v.detach().cpu().contiguous()
    return out


def load_full_state(module: Any, state: dict[str, Any]) -> None:
    """Load ``full_state``'s tensors; a tensor left out as an alias is tied to its twin again."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected:
        raise KeyError(f"checkpoint has tensors the model does not: {unexpected[:5]}")
    aliases = set(module.state_dict().keys()) - set(state)
    if set(missing) - aliases:
        raise KeyError(f"checkpoint lacks tensors: {sorted(set(missing) - aliases)[:5]}")
    params = dict(module.state_dict(keep_vars=True))
    untied = [k for k in missing if not any(params[k].data_ptr() == params[o].data_ptr() for o in state)]
    if untied:
        raise KeyError(f"checkpoint lacks tensors: {untied[:5]}")
