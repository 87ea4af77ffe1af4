"""Pipeline configuration: pydantic models loaded from YAML files in ``configs/``.

Every model forbids unknown keys, so a typo fails loudly with the key's dotted path.
Overrides come from the command line as ``dotted.key=value``; the value is parsed as YAML.
String values may contain ``{run_root}``, which is expanded after loading.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DIMENSIONS: tuple[str, ...] = ("semantic", "fidelity", "motion")
LABELS: tuple[str, ...] = ("Good", "Normal", "Bad")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def fingerprint(self) -> str:
        """Stable hash of this section's values (part of every stage key)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- infra
class RayConfig(Section):
    address: str | None = None  # None: start local Ray; "auto" or "ray://host:10001" attaches
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory: int | None = None
    include_dashboard: bool = False


class PrefectConfig(Section):
    # Global concurrency limit that GPU stages acquire, so two runs never oversubscribe GPUs.
    gpu_concurrency_limit: str = "lift-gpu"
    retries: int = 2
    retry_delay_seconds: list[float] = Field(default_factory=lambda: [1.0, 5.0, 20.0])


# --------------------------------------------------------------------------- data
class SyntheticConfig(Section):
    n: int = 240  # LiFT-HRA-format rated videos
    n_real: int = 24  # clean "HD-VILA" videos
    n_prompts: int = 24  # prompt suite size
    seed: int = 0
    height: int = 64
    width: int = 64
    num_frames: int = 17
    fps: int = 8


class SplitConfig(Section):
    val: float = 0.1
    test: float = 0.2
    salt: str = "lift"


class DataConfig(Section):
    catalog: str = "data_catalog/catalog.yaml"
    datasets: list[str] = Field(default_factory=list)  # names in the catalog
    synthetic: SyntheticConfig | None = None  # when set, `synth` renders the demo data first
    split: SplitConfig = Field(default_factory=SplitConfig)


class DecodeConfig(Section):
    frames: int = 8  # LiFT samples 8 frames uniformly
    height: int = 56
    width: int = 56
    batch_size: int = 8
    num_cpus: float = 1.0  # CPUs per decode task
    rows_per_shard: int = 256
    backend: Literal["auto", "decord", "pyav"] = "auto"


# --------------------------------------------------------------------------- critic
class LoraConfig(Section):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    modules_to_save: list[str] = Field(default_factory=list)


class TrainConfig(Section):
    num_workers: int = 1
    use_gpu: bool = False
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_steps: int = 200
    warmup_steps: int = 10
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    seed: int = 0
    run_name: str | None = None  # Ray Train RunConfig name; derived from the stage key when None


class TinyCriticConfig(Section):
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 64
    vision_num_heads: int = 2
    vocab_size: int = 2000
    seed: int = 0


class CriticConfig(Section):
    model: str = "{run_root}/models/critic-base"  # hub id or local dir
    backbone: Literal["qwen2-vl", "qwen2.5-vl"] = "qwen2-vl"
    build_tiny: TinyCriticConfig | None = None  # build a tiny model into `model` if it is missing
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    label_values: dict[str, float] = Field(default_factory=lambda: {"Good": 1.0, "Normal": 0.5, "Bad": 0.0})
    max_reason_tokens: int = 48


class ScoreConfig(Section):
    batch_size: int = 8
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    rationale: bool = False
    max_new_tokens: int = 32
    lift_values: dict[str, float] = Field(default_factory=lambda: {"Good": 0.9, "Normal": 0.2, "Bad": 0.05})


# --------------------------------------------------------------------------- T2V
class TinyT2VConfig(Section):
    num_layers: int = 1
    num_attention_heads: int = 4
    attention_head_dim: int = 8
    vae_block_out_channels: list[int] = Field(default_factory=lambda: [8, 8, 8, 8])
    vocab_size: int = 500
    seed: int = 0


class T2VConfig(Section):
    model: str = "{run_root}/models/t2v-base"
    family: Literal["cogvideox"] = "cogvideox"
    build_tiny: TinyT2VConfig | None = None
    height: int = 480
    width: int = 720
    num_frames: int = 49  # must be 4k+1
    fps: int = 8
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    max_sequence_length: int = 226
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class GenerateConfig(Section):
    videos_per_prompt: int = 1
    seed: int = 0
    batch_size: int = 1
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    max_prompts: int | None = None


class AlignConfig(Section):
    mode: Literal["lora", "full"] = "lora"
    lora: LoraConfig = Field(
        default_factory=lambda: LoraConfig(r=16, alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=1e-4, max_steps=100, batch_size=2))
    min_reward: float = 0.0  # samples below this critic reward are dropped
    real_scale: float = 1.0  # multiplier on the rewards of real (HD-VILA) videos
    use_real: bool = True


class EvaluateConfig(Section):
    max_prompts: int | None = None
    seed: int = 1234


class RescoreConfig(Section):
    generations: list[str] = Field(default_factory=list)  # fsspec URIs to watch
    store: str = "{run_root}/scores_store"
    critic: str | None = None  # adapter dir; None resolves the latest train_critic output
    cron: str = "0 * * * *"
    min_mean_reward: float | None = None
    fail_on_low_reward: bool = True


# --------------------------------------------------------------------------- root
class PipelineConfig(Section):
    name: str = "lift"
    run_root: str = "./runs/default"
    seed: int = 0
    ray: RayConfig = Field(default_factory=RayConfig)
    prefect: PrefectConfig = Field(default_factory=PrefectConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    t2v: T2VConfig = Field(default_factory=T2VConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    rescore: RescoreConfig = Field(default_factory=RescoreConfig)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw != "" else "")
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _expand(value: Any, run_root: str) -> Any:
    if isinstance(value, str):
        return value.replace("{run_root}", run_root)
    if isinstance(value, dict):
        return {k: _expand(v, run_root) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, run_root) for v in value]
    return value


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}")
        else:
            lines.append(f"key {key!r}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid config {source}: " + "; ".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    run_root = str(raw.get("run_root", PipelineConfig.model_fields["run_root"].default))
    try:
        return PipelineConfig.model_validate(_expand(raw, run_root))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config {source}: {err.strerror or err}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config {source} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config {source} must be a mapping at the top level")
    raw = _merge(raw, parse_overrides(overrides))
    return config_from_dict(raw, source)
