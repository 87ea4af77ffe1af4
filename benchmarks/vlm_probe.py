"""Analysis: what a critic base's frozen video tokens carry about the synthetic world, beside what its answers say.

The critic stage trains a LoRA on the language model while the vision tower and projector stay frozen
(LiFT's recipe), so a critic can only judge what the frozen video tokens carry *and* what its language
model learns to read from them. This separates the two for a Qwen2-VL-family base (``--model``: a local
directory or a ``catalog:`` entry; default the shipped demo VLM):

1. fresh clips of the whole synthetic world (the VLM pre-training's own renderer and decode path; a
   stream of its own, so no pre-training clip is reused) with their colour, shape, count, direction,
   motion and fidelity;
2. the base's frozen video tokens of each clip (vision tower + merger: what the language model sees);
3. a small reader trained on those tokens, twice: with a learned embedding of each token's place, and
   without (it then sees the tokens as a set). Its held-out accuracy per attribute is what the tokens
   carry; the gap between the two readers is what needs the tokens' places (direction does: where the
   object is, frame by frame);
4. the base's own greedy answers on the pre-training tasks' held-apart clips (``describe``: each
   attribute's word), as ``lift build-demo-models`` reports them.

``ratio``: the mean answer accuracy on shape, count and direction over the positional reader's: the share
of what the tokens carry that the VLM says (1 = it reads all of it).

    python benchmarks/vlm_probe.py                                   # the shipped demo VLM
    python benchmarks/vlm_probe.py --model runs/demo/build-demo-models/lift-demo-vlm

Direction is scored and trained on clips whose motion shows it (smooth or jittery): a teleporting clip
jumps to random places. Writes ``<out-dir>/vlm_probe.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import command, machine, publish  # benchmarks/ is on sys.path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NAME = "vlm_probe"
ATTRIBUTES = ("colour", "shape", "count", "direction", "motion", "fidelity")
READ = ("shape", "count", "direction")  # what the ratio compares (colour is read by every base)


def attribute_values() -> dict[str, list[str]]:
    """Each attribute's values in the synthetic world, in ``ATTRIBUTES`` order."""
    from lift_core.critic.pretrain import FIDELITIES, MOTIONS
    from lift_core.video.synth import COLOURS, COUNTS, DIRECTIONS, SHAPES

    return {"colour": list(COLOURS), "shape": list(SHAPES), "count": list(COUNTS), "direction": list(DIRECTIONS),
            "motion": list(MOTIONS), "fidelity": list(FIDELITIES)}


def labelled_clips(cfg: Any, n: int, stream: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips of the world at the critic's input size, ``uint8 [n, T, H, W, 3]``, and their
    attribute indices ``[n, len(ATTRIBUTES)]``."""
    from lift_core.critic.pretrain import clip_frames, sample_clip_spec

    values = attribute_values()
    frames, labels = [], []
    for i in range(n):
        digest = hashlib.sha256(f"lift-vlm-probe:{stream}:{seed}:{i}".encode()).digest()
        rng = np.random.RandomState(int.from_bytes(digest[:4], "big"))
        spec = sample_clip_spec(rng)
        frames.append(clip_frames(cfg, spec, int(rng.randint(1 << 30))))
        labels.append([values[a].index(getattr(spec, a)) for a in ATTRIBUTES])
    return np.stack(frames), np.asarray(labels)


def video_tokens(loaded: Any, frames: np.ndarray, frame_size: tuple[int, int], batch: int = 32) -> Any:
    """The frozen video tokens the language model sees, ``[n, tokens, width]``."""
    import torch

    out = []
    kwargs = loaded.backbone.video_kwargs(frame_size)
    with torch.inference_mode():
        for s in range(0, len(frames), batch):
            inputs = loaded.processor.video_processor(videos=list(frames[s:s + batch]), return_tensors="pt", **kwargs)
            feats = loaded.model.model.get_video_features(inputs["pixel_values_videos"],
                                                          inputs["video_grid_thw"]).pooler_output
            out.append(torch.stack(list(feats)).float())
    return torch.cat(out)


def train_reader(tokens: Any, labels: np.ndarray, classes: list[int], positions: bool, steps: int,
                 seed: int, direction_shown: np.ndarray) -> Any:
    """A one-layer transformer over a clip's tokens, mean-pooled, one linear head per attribute."""
    import torch

    torch.manual_seed(seed)
    n, n_tok, width = tokens.shape

    class Reader(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.place = torch.nn.Parameter(torch.zeros(n_tok, width), requires_grad=positions)
            self.layer = torch.nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True,
                                                          norm_first=True)
            self.heads = torch.nn.ModuleList([torch.nn.Linear(width, k) for k in classes])

        def forward(self, x: Any) -> list[Any]:
            h = self.layer(x + self.place).mean(1)
            return [head(h) for head in self.heads]

    reader = Reader()
    opt = torch.optim.AdamW([p for p in reader.parameters() if p.requires_grad], lr=1e-3)
    y, shown = torch.as_tensor(labels), torch.as_tensor(direction_shown)
    rng = np.random.RandomState(seed)
    d = ATTRIBUTES.index("direction")
    for _ in range(steps):
        idx = torch.as_tensor(rng.randint(n, size=min(32, n)))
        logits = reader(tokens[idx])
        loss = 0.0
        for k, out in enumerate(logits):
            keep = shown[idx] if k == d else torch.ones(len(idx), dtype=torch.bool)
            if keep.any():
                loss = loss + torch.nn.functional.cross_entropy(out[keep], y[idx][keep, k])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return reader.eval()


def reader_accuracy(reader: Any, tokens: Any, labels: np.ndarray, direction_shown: np.ndarray) -> dict[str, float]:
    import torch

    with torch.inference_mode():
        logits = reader(tokens)
    acc = {}
    for k, attr in enumerate(ATTRIBUTES):
        hit = logits[k].argmax(-1).numpy() == labels[:, k]
        acc[attr] = float(hit[direction_shown].mean() if attr == "direction" else hit.mean())
    return acc


def probe(cfg: Any, model: str, train_clips: int, eval_clips: int, steps: int, answer_clips: int,
          seed: int) -> dict[str, Any]:
    from lift_core.critic.backbone import load_critic
    from lift_core.critic.pretrain import MOTIONS, task_accuracy
    from lift_core import shipped

    # A catalog entry is used as shipped (sha256 checked), whatever build settings the config names.
    local = shipped.verified_dir(shipped.entry(model, cfg.data.catalog, "critic")) if shipped.is_catalog_ref(model) \
        else model
    frame_size = (cfg.decode.height, cfg.decode.width)
    loaded = load_critic(local, backbone=cfg.critic.backbone, device="cpu", frame_size=frame_size)
    loaded.model.eval()
    start = time.time()
    x_train, y_train = labelled_clips(cfg, train_clips, "train", seed)
    x_eval, y_eval = labelled_clips(cfg, eval_clips, "eval", seed)
    t_train, t_eval = video_tokens(loaded, x_train, frame_size), video_tokens(loaded, x_eval, frame_size)
    m = ATTRIBUTES.index("motion")
    shown_train = y_train[:, m] != MOTIONS.index("teleporting")
    shown_eval = y_eval[:, m] != MOTIONS.index("teleporting")
    classes = [len(v) for v in attribute_values().values()]
    figures: dict[str, Any] = {
        "model": model, "tokens_per_clip": int(t_train.shape[1]), "token_width": int(t_train.shape[2]),
        "train_clips": train_clips, "eval_clips": eval_clips, "reader_steps": steps, "seed": seed,
        "chance": {a: round(1.0 / c, 4) for a, c in zip(ATTRIBUTES, classes)},
    }
    for name, positions in (("reader_with_places", True), ("reader_without_places", False)):
        reader = train_reader(t_train, y_train, classes, positions, steps, seed, shown_train)
        figures[name] = reader_accuracy(reader, t_eval, y_eval, shown_eval)
    if answer_clips:
        said = task_accuracy(cfg, local, answer_clips, seed + 1)
        # The describe answer's word per attribute; motion and fidelity are the whole answers of the
        # motion and appearance tasks; the whole description and the matching task beside them.
        figures["answers"] = {**{a: said[f"describe_{a}"] for a in ("colour", "shape", "count", "direction")},
                              "motion": said["motion"], "fidelity": said["appearance"],
                              "describe_whole": said["describe"], "match": said["match"]}
        figures["answer_clips"] = answer_clips
    figures["seconds"] = round(time.time() - start, 1)
    return figures


def markdown(result: dict[str, Any]) -> str:
    f = result["figures"]
    lines = [
        "# What the critic base's frozen video tokens carry, and what its answers say",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, GPU: {result['machine']['gpu'] or 'none'}. Model: "
        f"`{f['model']}` ({f['tokens_per_clip']} video tokens of width {f['token_width']} per clip).",
        "",
        f"A one-layer reader trained on the frozen video tokens of {f['train_clips']} fresh clips "
        f"({f['reader_steps']} steps), accuracy on {f['eval_clips']} others; direction on the clips whose "
        "motion shows it (not teleporting). *With places*: each token position has a learned embedding; "
        "*without*: the reader sees the tokens as a set.",
        "",
        "| attribute | chance | reader with places | reader without places | the VLM's own answer |",
        "|---|---|---|---|---|",
    ]
    answers = f.get("answers", {})
    for a in ATTRIBUTES:
        said = f"{answers[a]:.3f}" if a in answers else "–"
        lines.append(f"| {a} | {f['chance'][a]:.3f} | {f['reader_with_places'][a]:.3f} | "
                     f"{f['reader_without_places'][a]:.3f} | {said} |")
    lines.append("")
    if answers:
        lines.append(f"The VLM's answers: greedy, on {f['answer_clips']} held-apart clips per pre-training task. "
                     "Colour, shape, count and direction are the words of its `describe` answer; motion and fidelity "
                     "are its whole answers to the `motion` and `appearance` questions. The whole description is "
                     f"right for {answers['describe_whole']:.3f} of the clips; `match` (does a text describe the "
                     f"clip) {answers['match']:.3f}.")
        lines.append("")
    if result["ratio"] is not None:
        lines.append(f"**Ratio** (the VLM's answers over the reader with places, mean of {', '.join(READ)}): "
                     f"{result['ratio']:.3f}.")
        lines.append("")
    lines.append(f"Command: `{result['command']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from lift_core.config import load_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs/demo.yaml"))
    ap.add_argument("--model", default=None, help="critic base: a directory or catalog:<name> (default: the "
                                                  "config's critic.model)")
    ap.add_argument("--train-clips", type=int, default=6000)
    ap.add_argument("--eval-clips", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3000, help="reader training steps (batches of 32)")
    ap.add_argument("--answer-clips", type=int, default=256, help="held-apart clips per task for the VLM's own "
                                                                  "answers (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=str(REPO / "benchmarks/results"))
    args = ap.parse_args(argv)
    cfg = load_config(args.config, [])
    model = args.model or cfg.critic.model
    figures = probe(cfg, model, args.train_clips, args.eval_clips, args.steps, args.answer_clips, args.seed)
    ratio = None
    if "answers" in figures:
        carried = np.mean([figures["reader_with_places"][a] for a in READ])
        ratio = round(float(np.mean([figures["answers"][a] for a in READ]) / carried), 4) if carried else None
    result = {"name": NAME, "machine": machine(), "figures": figures, "ratio": ratio,
              "ratio_means": "the VLM's own answer accuracy over the positional reader's, mean of shape, count "
                             "and direction: the share of what its frozen video tokens carry that it says",
              "command": command("vlm_probe.py", argv)}
    return publish(args.out_dir, result, markdown(result))


if __name__ == "__main__":
    main()
