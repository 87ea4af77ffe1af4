"""Pre-training of the demo's tiny VLM base (``critic.pretrain``; the demo's base, not the paper).

A real LiFT critic starts from a pre-trained video VLM (VILA, Qwen2-VL) that already knows what a clip
shows and how it looks; LiFT's LoRA then only teaches it to rate. The demo's tiny Qwen2-VL learns that
generic knowledge of the synthetic world here, once, before any rating (``lift build-demo-models``).

Generic video-text supervision, never LiFT-HRA's questions or labels (``TASKS``):

- ``describe``: what the clip shows: count, colour, shape and direction;
- ``appearance``: how the frames look: clean, blurred, lightly or heavily noisy, blocky;
- ``motion``: how the objects move: smoothly, jittering, jumping between places;
- ``match``: whether a text describes the clip (image-text matching, as in BLIP's pre-training),
  and if not, what the clip shows instead.

Clips are fresh renders of the whole world (every combination, motion and corruption), never a video
of the rated set: each is rendered at the rated set's shape, encoded to H.264 and decoded to the
critic's input exactly as the decode stage does, so the VLM learns on what it will later see. A clip
is a function of (seed, stream position), so a resumed run sees the same data. All weights train
(pre-training); the critic stage later freezes the vision tower and projector and trains a LoRA.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from lift_core import storage
from lift_core.config import PipelineConfig
from lift_core.train import TrainModel, WorkerContext
from lift_core.train.outputs import write_dir
from lift_core.train.trainable import full_state, load_full_state

log = logging.getLogger("lift.critic")

STAGE = "pretrain_critic"

TASKS = ("describe", "appearance", "motion", "match")
MOTIONS = ("smooth", "jittery", "teleporting")
FIDELITIES = ("clean", "blur", "light-noise", "blocky", "heavy-noise")

PROMPTS = {
    "describe": "Describe the video.",
    "appearance": "How do the frames look?",
    "motion": "How do the objects move?",
}
APPEARANCE = {
    "clean": "The frames are clean and sharp.",
    "blur": "The frames are blurred.",
    "light-noise": "The frames have light noise.",
    "blocky": "The frames have blocky corruption.",
    "heavy-noise": "The frames have heavy noise.",
}
MOVEMENT = {
    "smooth": "They move smoothly.",
    "jittery": "They jitter along the way.",
    "teleporting": "They jump between random places.",
}


@dataclass(frozen=True)
class Example:
    frames: np.ndarray  # uint8 [T, H, W, 3] at the critic's input size
    task: str
    prompt: str  # the user text after the video
    answer: str
    truth: str  # what a correct answer must say (the figures compare generated text to it)


def _seed(run_seed: int, position: int, stream: str) -> int:
    digest = hashlib.sha256(f"lift-pretrain-critic:{stream}:{int(run_seed)}:{int(position)}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def describe(count: str, colour: str, shape: str, direction: str) -> str:
    from lift_core.video.synth import caption_text

    return caption_text(count, colour, shape, direction)


def sample_clip_spec(rng: np.random.RandomState) -> Any:
    """A random clip of the whole world: content, motion and corruption independent."""
    from lift_core.video.synth import COLOURS, COUNTS, DIRECTIONS, SHAPES, SynthSpec

    colour = list(COLOURS)[rng.randint(len(COLOURS))]
    shape = SHAPES[rng.randint(len(SHAPES))]
    count = list(COUNTS)[rng.randint(len(COUNTS))]
    direction = DIRECTIONS[rng.randint(len(DIRECTIONS))]
    motion = MOTIONS[rng.randint(len(MOTIONS))]
    fidelity = FIDELITIES[rng.randint(len(FIDELITIES))]
    return SynthSpec(colour, shape, count, direction, motion, fidelity, colour, shape, count)


def _other_description(rng: np.random.RandomState, spec: Any) -> str:
    """A description that differs from the clip in one to four attributes (a hard negative)."""
    from lift_core.video.synth import COLOURS, COUNTS, DIRECTIONS, SHAPES

    values = {"count": list(COUNTS), "colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS)}
    words = {"count": spec.count, "colour": spec.colour, "shape": spec.shape, "direction": spec.direction}
    n_wrong = 1 + int(rng.choice(4, p=[0.55, 0.25, 0.12, 0.08]))
    for attr in rng.permutation(list(values))[:n_wrong].tolist():
        others = [v for v in values[attr] if v != words[attr]]
        words[attr] = others[rng.randint(len(others))]
    return describe(words["count"], words["colour"], words["shape"], words["direction"])


def clip_frames(cfg: PipelineConfig, spec: Any, seed: int) -> np.ndarray:
    """A clip rendered at the rated set's shape, through H.264 and the decoder at the critic's input size."""
    from lift_core.video.io import encode_mp4, read_video
    from lift_core.video.synth import render

    shape = cfg.data.synthetic
    if shape is None:
        raise ValueError("critic.pretrain renders the synthetic world: data.synthetic must be set (its shape)")
    frames = render(spec, shape.height, shape.width, shape.num_frames, seed=seed)
    d = cfg.decode
    return read_video(encode_mp4(frames, shape.fps), d.frames, d.height, d.width, backend=d.backend).frames


def make_examples(cfg: PipelineConfig, positions: Sequence[int], seed: int, stream: str = "train",
                  task: str | None = None) -> list[Example]:
    """The examples at ``positions`` of a stream; ``task`` fixes the task (held-apart figures)."""
    p = cfg.critic.pretrain
    weights = np.array([float(p.task_weights.get(t, 0.0)) if p is not None else 1.0 for t in TASKS])
    if weights.sum() <= 0:
        raise ValueError(f"critic.pretrain.task_weights gives no task a positive weight: {TASKS}")
    out = []
    for pos in positions:
        rng = np.random.RandomState(_seed(seed, pos, stream))
        spec = sample_clip_spec(rng)
        frames = clip_frames(cfg, spec, int(rng.randint(1 << 30)))
        kind = task or TASKS[int(rng.choice(len(TASKS), p=weights / weights.sum()))]
        shown = describe(spec.count, spec.colour, spec.shape, spec.direction)
        if kind == "describe":
            out.append(Example(frames, kind, PROMPTS[kind], f"{shown}.", shown))
        elif kind == "appearance":
            out.append(Example(frames, kind, PROMPTS[kind], APPEARANCE[spec.fidelity], APPEARANCE[spec.fidelity]))
        elif kind == "motion":
            out.append(Example(frames, kind, PROMPTS[kind], MOVEMENT[spec.motion], MOVEMENT[spec.motion]))
        else:
            matches = bool(rng.randint(2))
            text = shown if matches else _other_description(rng, spec)
            answer = "Yes." if matches else f"No. It shows {shown}."
            out.append(Example(frames, kind, f"Does this describe the video: {text}?", answer, answer))
    return out


def answer_token_loss(logits: Any, labels: Any) -> tuple[Any, Any, Any]:
    """Summed next-token cross-entropy over the answer tokens (``labels`` -100 elsewhere), the token
    count, and the count of tokens predicted right."""
    import torch.nn.functional as F

    shift, targets = logits[:, :-1].float(), labels[:, 1:]
    mask = targets != -100
    ce = F.cross_entropy(shift.reshape(-1, shift.shape[-1]), targets.reshape(-1).clamp_min(0),
                         reduction="none").view_as(targets) * mask
    correct = ((shift.argmax(dim=-1) == targets) & mask).sum()
    return ce.sum(), mask.sum(), correct


# --------------------------------------------------------------------------- the recipe
class VlmPretrainRecipe:
    """All weights of the tiny VLM learn the answers of the generic tasks (next-token cross-entropy)."""

    log_columns = [("loss", pa.float64()), ("token_accuracy", pa.float64())]

    def build(self, ctx: WorkerContext) -> TrainModel:
        from lift_core.critic.backbone import load_critic

        loaded = load_critic(ctx.config["model"], backbone=ctx.cfg.critic.backbone, device=ctx.device,
                             frame_size=(ctx.cfg.decode.height, ctx.cfg.decode.width), is_trainable=True)
        net = loaded.model
        net.requires_grad_(True)
        net.train()
        return TrainModel(module=net, param_groups=[{"params": [p for p in net.parameters() if p.requires_grad]}],
                          trainable_state=lambda: full_state(net), load_trainable_state=lambda st: load_full_state(net, st),
                          handles={"loaded": loaded})

    def make_batch(self, ctx: WorkerContext, model: TrainModel, positions: Sequence[int]) -> dict[str, Any]:
        from lift_core.critic.backbone import encode_prompts

        loaded = model.handles["loaded"]
        examples = make_examples(ctx.cfg, positions, ctx.settings.seed)
        prompts = [loaded.backbone.chat_prompt(loaded.processor, e.prompt) for e in examples]
        inputs = encode_prompts(loaded, [e.frames for e in examples], prompts, [e.answer for e in examples])
        return {"inputs": inputs, "labels": inputs.pop("labels")}

    def normalizer(self, batch: dict[str, Any]) -> float:
        return float((batch["labels"][:, 1:] != -100).sum())

    def loss(self, ctx: WorkerContext, model: TrainModel, net: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from lift_core.critic.backbone import to_device

        out = net(**to_device(batch["inputs"], ctx.device), use_cache=False)
        total, tokens, correct = answer_token_loss(out.logits, batch["labels"].to(ctx.device))
        return total, {"loss": total, "tokens": tokens.float(), "correct": correct.float()}

    def log_row(self, stats: dict[str, float]) -> dict[str, float]:
        n = max(stats["tokens"], 1.0)
        return {"loss": stats["loss"] / n, "token_accuracy": stats["correct"] / n}

    def finalize(self, ctx: WorkerContext, model: TrainModel, log_rows: list[dict[str, Any]]) -> None:
        loaded = model.handles["loaded"]
        net = model.module
        net.eval()

        def save(d: str) -> None:
            net.save_pretrained(d)
            loaded.processor.save_pretrained(d)

        write_dir(ctx.config["out_model_uri"], save)


# --------------------------------------------------------------------------- figures
def task_accuracy(cfg: PipelineConfig, model_dir: str, n_clips: int, seed: int) -> dict[str, float]:
    """Per task, the share of ``n_clips`` held-apart clips whose greedy answer is exactly right; for
    ``describe``, also per attribute (the word of each attribute in the generated description)."""
    import torch

    from lift_core.critic.backbone import encode_prompts, load_critic

    loaded = load_critic(model_dir, backbone=cfg.critic.backbone, device="cpu",
                         frame_size=(cfg.decode.height, cfg.decode.width))
    tok = loaded.processor.tokenizer
    eos = tok.convert_tokens_to_ids(loaded.backbone.end_of_turn)
    figures: dict[str, float] = {}
    attr_hits: dict[str, list[bool]] = {a: [] for a in ("count", "colour", "shape", "direction")}
    for task in TASKS:
        hits: list[bool] = []
        examples = make_examples(cfg, range(n_clips), seed, stream=f"eval-{task}", task=task)
        for s in range(0, len(examples), 32):
            chunk = examples[s:s + 32]
            prompts = [loaded.backbone.chat_prompt(loaded.processor, e.prompt) for e in chunk]
            inputs = encode_prompts(loaded, [e.frames for e in chunk], prompts)
            with torch.inference_mode():
                out = loaded.model.generate(**inputs, max_new_tokens=24, do_sample=False, eos_token_id=eos,
                                            pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            for e, text in zip(chunk, texts):
                text = text.strip().rstrip(".").strip()
                truth = e.truth.rstrip(".")
                hits.append(text == truth)
                if task == "describe":
                    said, shown = text.split(), truth.split()
                    # "<count> <colour> <shape(s)> moving <direction>"
                    for i, attr in enumerate(("count", "colour", "shape", "direction")):
                        j = (0, 1, 2, 4)[i]
                        attr_hits[attr].append(len(said) == len(shown) and said[j] == shown[j])
        figures[task] = float(np.mean(hits))
    figures.update({f"describe_{a}": float(np.mean(v)) for a, v in attr_hits.items()})
    return figures


def pretrain_tiny_critic(cfg: PipelineConfig, model_dir: str, record: dict[str, Any],
                         progress: Any = None) -> dict[str, Any]:
    """Pre-train the freshly built tiny critic in the local directory ``model_dir`` in place. The run
    and its checkpoints live in the ``pretrain_critic`` stage folder of ``record``, so an interrupted
    build resumes. Returns the figures for the build record."""
    import shutil

    from lift_core.train import LoopSettings
    from lift_core.train.loop import fit_once

    p = cfg.critic.pretrain
    out = storage.record_stage_dir(cfg.run_root, STAGE, record)
    config = {"section": "critic.pretrain.train", "model": model_dir, "out_model_uri": storage.join(out, "model")}
    log.info("pre-training the tiny critic VLM: %d steps", p.train.max_steps)
    figures: dict[str, Any] = {"stage_dir": out}
    figures["loss"] = fit_once(VlmPretrainRecipe(), cfg, LoopSettings.for_stage(p), config, out,
                               f"lift-pretrain-critic-{os.path.basename(out)}", "critic VLM pre-training",
                               progress.for_stage("critic-vlm") if hasattr(progress, "for_stage") else progress)
    trained = storage.local_dir(config["out_model_uri"], "config.json")
    figures["held_apart_accuracy"] = task_accuracy(cfg, trained, p.eval_clips, p.train.seed + 1)
    log.info("tiny critic VLM: held-apart answer accuracy %s", figures["held_apart_accuracy"])
    for name in os.listdir(model_dir):  # replace the random weights with the trained ones
        path = os.path.join(model_dir, name)
        if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
            os.remove(path)
    for name in os.listdir(trained):
        if name.endswith(".safetensors") or name.endswith(".safetensors.index.json") or name == "config.json":
            shutil.copy(os.path.join(trained, name), os.path.join(model_dir, name))
    return figures


__all__ = ["TASKS", "VlmPretrainRecipe", "make_examples", "pretrain_tiny_critic", "task_accuracy"]
