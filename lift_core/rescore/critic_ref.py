"""Which critic scores: an explicit adapter dir, or the newest output of the train_critic stage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.rescore.store import modified_time


@dataclass(frozen=True)
class CriticRef:
    adapter: str  # PEFT adapter dir (any fsspec URI)
    model: str  # the base model it loads on (hub id or local dir)
    critic_id: str  # hash of adapter and base model: the store's version of a score


def latest_trained_adapter(run_root: str) -> str:
    """The adapter of the newest ``<run_root>/train_critic/*/_SUCCESS.json`` (by its write time)."""
    fs, path = storage.fs_and_path(storage.join(run_root, "train_critic"))
    fs.invalidate_cache(path)
    found: list[tuple[datetime, str]] = []
    if fs.exists(path):
        for p in fs.glob(f"{path}/*/{storage.SUCCESS_FILE}"):
            when = modified_time(fs.info(p))
            if when is not None:
                found.append((when, p))
    if not found:
        raise FileNotFoundError(
            f"no trained critic under {storage.join(run_root, 'train_critic')} (no */_SUCCESS.json): "
            "train one first or pass --critic / rescore.critic"
        )
    _, newest = max(found)
    success = storage.read_json(storage.to_uri(fs, newest))
    adapter = (success.get("outputs") or {}).get("adapter")
    if not adapter:
        raise ValueError(f"{storage.to_uri(fs, newest)} names no 'adapter' output")
    return str(adapter)


def resolve_critic(cfg: PipelineConfig, adapter: str | None = None, model: str | None = None) -> CriticRef:
    """The critic to score with: ``adapter`` > ``cfg.rescore.critic`` > newest train_critic output.

    ``critic_id`` hashes the base model's content, so the same critic has the same id here and in the
    score stage wherever its files live.
    """
    from lift_core.critic.backbone import critic_id
    from lift_core.critic.scoring import adapter_base_model, local_copy

    adapter = adapter or cfg.rescore.critic or latest_trained_adapter(cfg.run_root)
    if not storage.exists(storage.join(adapter, "adapter_config.json")):
        raise FileNotFoundError(f"critic adapter not found (no adapter_config.json): {adapter}")
    local = local_copy(adapter)
    model = model or base_model_of(cfg, adapter_base_model(local, default=cfg.critic.model))
    return CriticRef(adapter=adapter, model=model, critic_id=critic_id(model, local))


def base_model_of(cfg: PipelineConfig, recorded: str) -> str:
    """The base to load an adapter on: the base it recorded when that is a local dir here; else the
    configured base (built when tiny, as the score stage does) when it recorded that one or the
    recorded dir is gone; else the recorded hub id."""
    import os

    if os.path.isdir(recorded):
        return recorded
    if recorded == cfg.critic.model or cfg.critic.build_tiny is not None or os.path.isdir(cfg.critic.model):
        from lift_core.critic.builder import ensure_critic_base

        return ensure_critic_base(cfg)
    return recorded
