"""peft's probe of transformers' deprecated ``is_gradient_checkpointing`` is silenced where we wrap a model
with peft, and only there: the same call outside warns, and other warnings still show."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest


def tiny_lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8))


def deprecations(caught) -> list[str]:
    return [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_add_lora_is_free_of_the_is_gradient_checkpointing_warning():
    from peft import LoraConfig, get_peft_model

    from lift_core.critic.backbone import peft_probe_quiet
    from lift_core.critic.train import add_lora

    lora = SimpleNamespace(r=2, alpha=4, dropout=0.0, target_modules=["c_attn"], modules_to_save=[])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_peft_model(tiny_lm(), LoraConfig(r=2, target_modules=["c_attn"]))  # peft alone: the warning
    if not deprecations(caught):
        pytest.skip("this transformers no longer warns on is_gradient_checkpointing: nothing to silence")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_lora(tiny_lm(), lora)
        with peft_probe_quiet():
            warnings.warn("another warning", FutureWarning)
    shown = [str(w.message) for w in caught]
    assert deprecations(caught) == [] and "another warning" in shown
    assert any("fan_in_fan_out" in m for m in shown)  # peft's own warnings about this model still show
