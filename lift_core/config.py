"""Pipeline configuration: pydantic models loaded from YAML files in ``configs/``.

Every model forbids unknown keys, so a typo fails loudly with the key's dotted path.
Overrides come from the command line as ``dotted.key=value``; the value is parsed as YAML.
String values may contain ``{run_root}``, which is expanded after loading.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lift_core.domain import DIMENSIONS, LABELS  # noqa: F401  (callers import both from config too)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _partial_subsection_keeps_field_defaults(cls, data: Any) -> Any:
        # A sub-section given in part (`t2v.pretrain.denoiser.max_steps=2400`, or a YAML block with a few
        # keys) keeps the other values of THIS field's default (the pre-training VAE's lr 3e-3,
        # align.train's lr 1e-4), not those of the sub-section's class, which are another field's defaults.
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            given = out.get(name)
            if isinstance(given, dict) and field.default_factory is not None:
                default = field.default_factory()
                if isinstance(default, BaseModel):
                    out[name] = _merge(default.model_dump(), given)
        return out

    # Fields that say where a model is, not what it is: a stage key holds the base model's identity
    # (lift_core.model_identity) instead, so the same model under another run_root keeps its keys.
    LOCATION_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def fingerprint(self) -> str:
        """Stable hash of this section's values (part of every stage key)."""
        blob = json.dumps(self.model_dump(mode="json", exclude=set(self.LOCATION_FIELDS)), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- infra
class RayConfig(Section):
    address: str | None = None  # None: start local Ray; "auto" or "ray://host:10001" attaches
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory: int | None = None
    include_dashboard: bool = False
    # Where Ray Train keeps its run state (RunConfig.storage_path): every node must reach it on a real
    # cluster (an NFS path or s3://...). None: the local temp dir, which one machine shares.
    storage_path: str | None = None
    # Ray Data fails a dataset that makes no progress for this long (its default: 30 minutes). Stages run
    # side by side on one cluster, so a decode queues for CPUs while another stage holds them (the demo's
    # critic training takes both of its 2 CPUs, longer than 30 minutes on a busy machine): waiting is not a
    # hang. None: the guard is off, and the stage's progress line shows the wait; seconds: the guard on.
    data_no_progress_timeout_s: float | None = Field(None, gt=0)


class PrefectConfig(Section):
    # Global concurrency limit that GPU stages acquire (one slot per GPU they use), so two flow runs
    # never oversubscribe the GPUs. Its size: gpu_slots, else ray.num_gpus; created when missing.
    gpu_concurrency_limit: str = "lift-gpu"
    gpu_slots: int | None = Field(None, ge=1)
    gpu_wait_s: float | None = Field(None, gt=0)  # give up waiting for GPU slots after this (None: wait)
    # Transient I/O errors (OSError, timeouts) are retried with exponential backoff:
    # retry_backoff_s * 2**attempt seconds, +- retry_jitter (a fraction).
    retries: int = Field(3, ge=0)
    retry_backoff_s: float = Field(2.0, ge=0)
    retry_jitter: float = Field(0.2, ge=0)
    # Task results (small dicts of URIs) persist here so caching works across flow runs and servers;
    # under the run root, so deleting a run also forgets its cache. None: <run_root>/_prefect/results.
    result_storage: str | None = None


# --------------------------------------------------------------------------- data
class SyntheticConfig(Section):
    n: int = Field(240, ge=0)  # LiFT-HRA-format rated videos
    n_real: int = Field(24, ge=0)  # clean "HD-VILA" videos
    n_prompts: int = Field(24, ge=0)  # prompt suite size
    seed: int = 0
    height: int = Field(64, ge=16, multiple_of=2)  # even sides: H.264 yuv420p
    width: int = Field(64, ge=16, multiple_of=2)
    num_frames: int = Field(17, ge=2)
    fps: int = Field(8, ge=1)


class SplitConfig(Section):
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.2, ge=0, le=1)
    salt: str = "lift"


class DataConfig(Section):
    catalog: str = "data_catalog/catalog.yaml"
    datasets: list[str] = Field(default_factory=list)  # names in the catalog
    synthetic: SyntheticConfig | None = None  # when set, `synth` renders the demo data first
    split: SplitConfig = Field(default_factory=SplitConfig)
    # Ingest rejects a caption (or prompt) longer than this, per entry, with the reason.
    max_caption_chars: int = Field(4000, ge=1)
    # Only regular files are read, each within these bounds: a FIFO or a device never hangs a source,
    # a huge file never fills memory; an input past them is rejected with the reason.
    max_video_bytes: int = Field(4 << 30, ge=1)  # a video file (hashed, decoded)
    max_json_bytes: int = Field(512 << 20, ge=1)  # a JSON source, sidecar or captions.json
    read_timeout_s: float = Field(600.0, gt=0)  # per file, checked between blocks


class DecodeConfig(Section):
    frames: int = Field(8, ge=1)  # LiFT samples 8 frames uniformly
    height: int = Field(56, ge=2)
    width: int = Field(56, ge=2)
    batch_size: int = Field(8, ge=1)  # videos per Ray task = rows per frames shard (the unit of resume)
    num_cpus: float = Field(1.0, gt=0)  # CPUs per decode task
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
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    max_steps: int = 200
    warmup_steps: int = 10  # linear warmup, then lr_schedule
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine decays to 0 at max_steps
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    # batch_size is the GLOBAL batch: split over num_workers x grad_accum_steps micro-batches, so the
    # optimizer step (and a resumed run) does not depend on how it executes.
    grad_accum_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False  # recompute activations in backward: memory for time
    # bf16/fp16: forward and backward under autocast; trainable weights always stay in fp32.
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    checkpoint_every: int = 50
    seed: int = 0
    run_name: str | None = None  # Ray Train RunConfig name; derived from the stage key when None


class CriticTrainConfig(TrainConfig):
    lr_schedule: Literal["constant", "cosine"] = "cosine"


def registered_critic_backbone(name: str, tiny: bool = False) -> str:
    """``name`` when a critic backbone of that name is registered (with ``tiny``: one that can build a
    tiny model); else ValueError with the known names."""
    from lift_core.critic.backbone import backbone_names  # lazy: the config imports no model code

    if name not in backbone_names():
        raise ValueError(f"unknown critic backbone {name!r}; known: {backbone_names()}")
    if tiny and name not in backbone_names(tiny=True):
        raise ValueError(f"critic backbone {name!r} cannot build a tiny model; these can: {backbone_names(tiny=True)}")
    return name


class TinyCriticConfig(Section):
    architecture: str = "qwen2-vl"  # a registered critic backbone that can build a tiny model
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 64
    vision_num_heads: int = 2
    vision_mlp_ratio: int = 2
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    vocab_size: int = 2000
    seed: int = 0

    @field_validator("architecture")
    @classmethod
    def _registered_architecture(cls, name: str) -> str:
        return registered_critic_backbone(name, tiny=True)


class CurriculumPhase(Section):
    steps: int = Field(..., ge=1)
    dimensions: list[str] = Field(..., min_length=1)

    @field_validator("dimensions")
    @classmethod
    def _known_dimensions(cls, value: list[str]) -> list[str]:
        unknown = [d for d in value if d not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown dimension(s) {unknown}; expected some of {list(DIMENSIONS)}")
        return value


class CriticPretrainConfig(Section):
    """Pre-training of a ``build_tiny`` critic base on generic video-text supervision of the synthetic
    world (``lift_core.critic.pretrain``): what a general VLM knows (what a clip shows, how it looks and
    moves), never LiFT-HRA's questions or labels. Part of the tiny build's record."""

    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        max_steps=3000, batch_size=16, lr=1e-3, warmup_steps=50, lr_schedule="cosine", checkpoint_every=500))
    # Relative frequency of each generic task (see lift_core.critic.pretrain.TASKS).
    task_weights: dict[str, float] = Field(default_factory=lambda: {
        "describe": 1.0, "appearance": 1.0, "motion": 1.0, "match": 1.0})
    eval_clips: int = Field(256, ge=8)  # held-apart clips per task for the build record's figures
    cpus_per_worker: float = 2.0
    max_failures: int = 0
    keep_checkpoints: int = 1


class CriticConfig(Section):
    LOCATION_FIELDS = frozenset({"model", "build_dir"})
    # hub id, local dir, or ``catalog:<name>``: a model shipped in the catalog (``data.catalog``'s
    # ``models``), checked against its sha256 at load.
    model: str = "{run_root}/models/critic-base"
    backbone: str = "qwen2-vl"  # a registered critic backbone (lift_core.critic.backbone)
    # With ``model`` a directory: build a tiny model into it if it is missing. With ``model`` a catalog
    # entry: the build the shipped model must have come from; another builds its own (``build_dir``).
    build_tiny: TinyCriticConfig | None = None
    pretrain: CriticPretrainConfig | None = None  # with build_tiny: pre-train it (the demo's VLM base)
    build_dir: str = "{run_root}/models/critic-base"  # where a build of a catalog ref's settings goes
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: CriticTrainConfig = Field(default_factory=CriticTrainConfig)
    label_values: dict[str, float] = Field(default_factory=lambda: {"Good": 1.0, "Normal": 0.5, "Bad": 0.0})
    max_reason_tokens: int = 48  # training answers keep at most this many reason tokens
    # Training extras: the loss weight of the label token relative to each reason token, and how
    # the run executes (not part of the stage key).
    label_token_weight: float = Field(1.0, gt=0)
    # Also train the embedding rows of the three label tokens (peft's trainable_token_indices; with tied
    # embeddings, their output rows too): a LoRA alone may never make a label word likely that the base
    # never answers with (the LM's label cross-entropy stalls at 3.4-3.7 nats on the demo's base).
    train_label_tokens: bool = False
    # LR of the fully trained ``lora.modules_to_save`` (e.g. a fresh LM head or the vision merger);
    # None: ``train.lr``. A fresh head learns fast at a high LR that would wreck the LoRA'd body.
    modules_to_save_lr: float | None = Field(None, gt=0)
    # The LoRA matrices stay frozen for this many steps while modules_to_save train alone (fit a
    # fresh head/projector before the body moves, as LLaVA's stage 1 and "linear probe, then fine-tune").
    lora_start_step: int = Field(0, ge=0)
    # Curriculum: phases that train on some dimensions alone, in order, before all of them train
    # together until train.max_steps. Semantic consistency needs the caption bound to the video;
    # a small critic learns it alone, but not while the easier dimensions take the gradient.
    curriculum: list[CurriculumPhase] = Field(default_factory=list)
    eval_batch_size: int = Field(16, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(0, ge=0)  # Ray Train restarts of the worker group (each resumes from the last checkpoint)
    keep_checkpoints: int = Field(2, ge=1)

    @field_validator("backbone")
    @classmethod
    def _registered_backbone(cls, name: str) -> str:
        return registered_critic_backbone(name)

    @model_validator(mode="after")
    def _curriculum_fits(self) -> "CriticConfig":
        steps = sum(phase.steps for phase in self.curriculum)
        if self.curriculum and steps >= self.train.max_steps:
            raise ValueError(f"curriculum phases take {steps} steps: they must end before train.max_steps "
                             f"({self.train.max_steps}), which all dimensions train together to reach")
        return self


class ActorPoolConfig(Section):
    """A Ray Data actor pool (lift_core.distributed.actor_pool): items per batch, actors, resources."""

    batch_size: int = 1
    num_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0


class ScoreConfig(ActorPoolConfig):
    batch_size: int = 8
    rationale: bool = False
    max_new_tokens: int = 32
    lift_values: dict[str, float] = Field(default_factory=lambda: {"Good": 0.9, "Normal": 0.2, "Bad": 0.05})
    rows_per_shard: int = 256  # score rows per output shard (the unit of resume after a crash)
    sources: list[str] | None = None  # manifest sources to score (e.g. [hd-vila, generated]); None: all


# --------------------------------------------------------------------------- T2V
class TinyT2VConfig(Section):
    num_layers: int = 1
    num_attention_heads: int = 4
    attention_head_dim: int = 8  # heads x head_dim is also the T5 d_model (text_embed_dim)
    time_embed_dim: int = 2
    vae_block_out_channels: list[int] = Field(default_factory=lambda: [8, 8, 8, 8])  # n blocks: 2^(n-1)x spatial
    vae_norm_groups: int = 2
    latent_channels: int = 4
    t5_layers: int = 2
    vocab_size: int = 500  # sentencepiece pieces (byte fallback needs >= 260)
    seed: int = 0


class T2VPretrainConfig(Section):
    """Pre-training of a ``build_tiny`` T2V on the synthetic world (``lift_core.t2v.pretrain``): the VAE,
    then the denoiser on its latents. Part of the tiny build's record: a change rebuilds the model."""

    vae: TrainConfig = Field(default_factory=lambda: TrainConfig(
        max_steps=300, batch_size=8, lr=3e-3, warmup_steps=10, checkpoint_every=100))
    # 2400 steps: at 600 (batch 16) the base drew objects of the right colour but moved them at random
    # (direction adherence 0.24, chance); at 2400 it moves them as captioned (0.98). Batch 8 keeps it fast.
    denoiser: TrainConfig = Field(default_factory=lambda: TrainConfig(
        max_steps=2400, batch_size=8, lr=1e-3, warmup_steps=20, checkpoint_every=400))
    kl_weight: float = 1e-6  # a nearly plain autoencoder: the latent only has to be smooth enough to sample
    initial_logvar: float = -6.0  # posterior log-variance at the start (see lift_core.t2v.pretrain)
    scaling_clips: int = Field(64, ge=2)  # clips that set the VAE's scaling_factor (unit-variance latents)
    # Web captions are noisy, so web-trained T2V bases follow their prompts only partly, and LiFT's
    # alignment has their right samples to select. Per attribute (colour, shape, count, direction):
    # the probability that a pre-training caption's word is replaced by another value (the clip stays
    # as rendered, the caption stays a training combination).
    caption_noise: dict[str, float] = Field(default_factory=dict)
    cpus_per_worker: float = 2.0
    max_failures: int = 0
    keep_checkpoints: int = 1

    @field_validator("caption_noise")
    @classmethod
    def _known_attributes(cls, value: dict[str, float]) -> dict[str, float]:
        known = ("colour", "shape", "count", "direction")
        bad = {k: v for k, v in value.items() if k not in known or not 0.0 <= float(v) < 1.0}
        if bad:
            raise ValueError(f"caption_noise: {bad}: keys must be some of {list(known)}, values in [0, 1)")
        return value


class T2VConfig(Section):
    LOCATION_FIELDS = frozenset({"model", "build_dir"})
    # hub id, local dir, or ``catalog:<name>`` (a shipped model, checked against its sha256 at load)
    model: str = "{run_root}/models/t2v-base"
    family: str = "cogvideox"  # a registered T2V family (lift_core.t2v.spec.SPECS)
    build_tiny: TinyT2VConfig | None = None
    pretrain: T2VPretrainConfig | None = None  # with build_tiny: pre-train it on the synthetic world
    build_dir: str = "{run_root}/models/t2v-base"  # where a build of a catalog ref's settings goes
    height: int = 480
    width: int = 720
    num_frames: int = 49  # must be 4k+1
    fps: int = 8
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    max_sequence_length: int = 226
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # VAE memory (the latent cache and generation): tiling encodes and decodes overlapping tiles, so a
    # 49x480x720 clip fits on one GPU; slicing runs one video of a batch through the VAE at a time.
    vae_tiling: bool = False
    vae_slicing: bool = False

    @field_validator("family")
    @classmethod
    def _registered_family(cls, name: str) -> str:
        from lift_core.t2v.spec import SPECS  # lazy: the config imports no model code

        if name not in SPECS:
            raise ValueError(f"unknown t2v.family {name!r}; known: {sorted(SPECS)}")
        return name


class GenerateConfig(ActorPoolConfig):
    videos_per_prompt: int = 1
    seed: int = 0
    max_prompts: int | None = None


class DpoConfig(Section):
    # Diffusion-DPO (Wallace et al. 2024, "Diffusion Model Alignment Using Direct Preference
    # Optimization"): beta 5000 is their SD1.5 value (train.py `--beta_dpo`); the loss is
    # -log sigmoid(-beta/2 * ((err_w - err_l) - (ref_err_w - ref_err_l))).
    beta: float = Field(5000.0, gt=0)
    # Pairs of one prompt whose critic rewards differ by less than this are too close to call: dropped.
    min_gap: float = Field(0.1, ge=0)


class AlignConfig(Section):
    mode: Literal["lora", "full"] = "lora"
    # mode full: train only these submodules of the denoiser, by module name (e.g. [transformer_blocks], as
    # LiFT's CogVideo/finetune/train.py does); empty: every parameter.
    full_train_modules: list[str] = Field(default_factory=list)
    # lift: LiFT's reward-weighted likelihood. dpo: Diffusion-DPO on pairs of videos of one prompt, the
    # higher critic reward winning, against the frozen base (the LoRA adapter disabled).
    objective: Literal["lift", "dpo"] = "lift"
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    lora: LoraConfig = Field(
        default_factory=lambda: LoraConfig(r=16, alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=1e-4, max_steps=100, batch_size=2))
    min_reward: float = 0.0  # samples below this critic reward are dropped
    real_scale: float = 1.0  # multiplier on the rewards of real (HD-VILA) videos
    use_real: bool = True
    real_source: str = "hd-vila"  # manifest source of the real set
    reward_column: Literal["reward", "reward_lift"] = "reward"  # continuous reward or LiFT's discrete mapping
    # critic: the scores' rewards. file: the rewards of reward_file (a LiFT alignment JSON's `score`, a LiFT
    # critic_output JSON, or a scores.parquet of `lift import-scores`) where it has the (video, caption);
    # the critic's elsewhere.
    reward_source: Literal["critic", "file"] = "critic"
    reward_file: str | None = None
    # reward: LiFT's reward-weighted likelihood. uniform: the ablation, plain fine-tuning on the same
    # samples (after min_reward) with weight 1, which tells what the reward weights themselves add.
    weighting: Literal["reward", "uniform"] = "reward"
    # train.batch_size is the GLOBAL batch, split evenly over train.num_workers: results do not depend
    # on the world size, and a run may resume under another one.
    cpus_per_worker: float = 1.0
    max_failures: int = 0  # Ray Train restarts of the worker group (each resumes from the last checkpoint)
    keep_checkpoints: int = 2
    # Latent + text-embedding cache, keyed by content and encoder: shared by every run under this root.
    cache_root: str = "{run_root}/cache/t2v"
    cache_batch_size: int = 8
    cache_num_actors: int = 1
    cache_num_gpus_per_actor: float = 0.0
    cache_num_cpus_per_actor: float = 1.0


    @model_validator(mode="after")
    def _reward_file_given(self) -> "AlignConfig":
        if self.reward_source == "file" and not self.reward_file:
            raise ValueError("align.reward_source=file needs align.reward_file (a LiFT JSON or a scores.parquet)")
        return self


class EvaluateConfig(Section):
    max_prompts: int | None = None
    seed: int = 1234  # base of the per-(prompt, index) seeds; base and aligned use the same ones
    split: str = "test"  # held-out prompts
    videos_per_prompt: int | None = None  # None: generate.videos_per_prompt
    # A folder (local or s3://) that receives the aligned model's evaluation videos with their captions
    # (captions.json): new generations for a watched rescore folder (the demo's scheduled rescoring).
    publish_generations: str | None = None


class RescoreConfig(Section):
    generations: list[str] = Field(default_factory=list)  # fsspec URIs to watch
    store: str = "{run_root}/scores_store"
    critic: str | None = None  # adapter dir; None resolves the latest train_critic output
    cron: str = "0 * * * *"
    timezone: str = "UTC"  # of the cron schedule
    min_mean_reward: float | None = None
    fail_on_low_reward: bool = True  # below min_mean_reward: the flow run fails (else: Completed "Warning")
    source: str = "generated"  # the scores' `source` column
    batch_size: int = Field(16, ge=1)  # videos per store commit (one MERGE): the unit of resume after a crash
    decode_workers: int = Field(2, ge=1)  # threads decoding a batch
    hash_workers: int = Field(8, ge=1)  # threads hashing new files (remote reads are I/O bound)
    rationale: bool = False  # also generate reasons (slower)
    # The store's Delta tables (lift_core.rescore.store): a MERGE that loses a commit race to another
    # writer is rerun on the new version, up to this many times.
    commit_retries: int = Field(30, ge=1)
    # After a run, OPTIMIZE (compact) and VACUUM the tables once the scores table has this many data
    # files (0: never; `lift rescore-store compact` does it on demand).
    compact_min_files: int = Field(64, ge=0)
    vacuum_retention_hours: float = Field(168.0, ge=0)  # VACUUM keeps the files of versions this recent


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

    @model_validator(mode="after")
    def _expand_run_root_in_defaults(self) -> "PipelineConfig":
        # Defaults such as critic.build_dir hold "{run_root}" too: expanded here, however the config was
        # made, so that a config and its YAML dump give the same values (and the same stage keys).
        _expand_model(self, self.run_root)
        return self


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


def _override_value(raw: str) -> Any:
    """An override's value parsed as YAML (``[a, b]``, ``3``, ``true``), else the text as given.

    Text that is not valid YAML stays a string, and so does a ``{run_root}``-style placeholder that
    YAML would read as a mapping or set of nulls (``{run_root}``, ``{run_root}/x``, ``{a, b}``).
    """
    if raw == "":
        return ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict) and value and all(v is None for v in value.values()):
        return raw
    return value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), _override_value(raw))
    return tree


def read_overrides_file(path: str | Path) -> list[str]:
    """The ``key=value`` overrides of a file, one per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise ConfigError(f"cannot read overrides {path}: {err.strerror or err}") from None
    overrides = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    parse_overrides(overrides)  # a malformed line fails here, naming itself
    return overrides


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


def _expand_model(model: BaseModel, run_root: str) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _expand_model(value, run_root)
            continue
        expanded = _expand(value, run_root)
        if expanded != value:
            object.__setattr__(model, name, expanded)  # no re-validation: only placeholders change


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
