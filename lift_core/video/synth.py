"""Synthetic LiFT-HRA data: procedural videos whose labels are known by construction.

- semantic: the caption's colour, shape, count and direction (the four things the pixel oracle reads)
  are checked against what is drawn; 0 wrong attributes -> Good, 1 -> Normal, 2 or 3 -> Bad.
- motion: smooth -> Good, jittery -> Normal, teleporting -> Bad.
- fidelity: clean -> Good, blur or light noise -> Normal, blocky corruption or strong noise -> Bad.

Each dimension's levels are balanced (a third each) and shuffled independently of the other
dimensions, so a majority-class critic scores 1/3. Everything is made visually obvious at 56 px and
8 frames, the critic's input size in the demo: large saturated shapes on a plain dark background,
motion across half the frame, strong noise, big grey macroblocks. Size, speed and path vary per
video, so every video has its own content id. The same seed gives the same bytes.

Outputs (``write_synthetic``): ``lift-hra.json`` (LiFT-HRA's LLaVA conversation format, one entry
per video and question), ``hd-vila.json`` (clean, smooth, caption-true videos in LiFT's inference
format), ``prompts.json`` (a VBench-format prompt suite of the same caption grammar) and the mp4s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from lift_core import storage
from lift_core.config import LABELS, PipelineConfig, SplitConfig, SyntheticConfig
from lift_core.progress import ProgressFn, resolve
from lift_core.video.io import encode_mp4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 205, 50),
    "blue": (45, 85, 235),
    "yellow": (235, 225, 40),
}
SHAPES = ("circle", "square", "triangle")
COUNTS = {"one": 1, "two": 2, "three": 3}
DIRECTIONS = ("left", "right", "up", "down")
BACKGROUND = (18, 18, 24)


@dataclass(frozen=True)
class SynthSpec:
    colour: str
    shape: str
    count: str
    direction: str
    motion: str  # smooth | jittery | teleporting
    fidelity: str  # clean | blur | light-noise | blocky | heavy-noise
    caption_colour: str
    caption_shape: str
    caption_count: str
    caption_direction: str | None = None  # None: the caption says the direction shown

    @property
    def said_direction(self) -> str:
        return self.caption_direction or self.direction

    @property
    def caption(self) -> str:
        return caption_text(self.caption_count, self.caption_colour, self.caption_shape, self.said_direction)

    @property
    def wrong_attributes(self) -> list[str]:
        """What the caption gets wrong, of the four things the pixel oracle reads (a human rater would
        call a video that moves against its caption semantically wrong too)."""
        pairs = [("colour", self.colour, self.caption_colour), ("shape", self.shape, self.caption_shape),
                 ("count", self.count, self.caption_count), ("direction", self.direction, self.said_direction)]
        return [name for name, true, said in pairs if true != said]

    def labels(self) -> dict[str, str]:
        n_wrong = len(self.wrong_attributes)
        semantic = "Good" if n_wrong == 0 else "Normal" if n_wrong == 1 else "Bad"
        motion = {"smooth": "Good", "jittery": "Normal", "teleporting": "Bad"}[self.motion]
        fidelity = {"clean": "Good", "blur": "Normal", "light-noise": "Normal"}.get(self.fidelity, "Bad")
        return {"semantic": semantic, "motion": motion, "fidelity": fidelity}

    def reasons(self) -> dict[str, str]:
        said = f"{self.caption_count} {self.caption_colour} {plural(self.caption_shape, self.caption_count)}"
        shown = f"{self.count} {self.colour} {plural(self.shape, self.count)}"
        if "direction" in self.wrong_attributes:
            said, shown = f"{said} moving {self.said_direction}", f"{shown} moving {self.direction}"
        semantic = (
            "The video matches the caption." if not self.wrong_attributes
            else f"The caption says {said} but the video shows {shown}."
        )
        motion = {
            "smooth": "The motion is smooth and continuous.",
            "jittery": "The objects jitter from frame to frame.",
            "teleporting": "The objects jump to random places between frames.",
        }[self.motion]
        fidelity = {
            "clean": "There are no obvious problems.",
            "blur": "The frames are blurred.",
            "light-noise": "The frames have visible noise.",
            "blocky": "The frames have blocky corruption.",
            "heavy-noise": "The frames are covered in heavy noise.",
        }[self.fidelity]
        return {"semantic": semantic, "motion": motion, "fidelity": fidelity}


def plural(shape: str, count: str) -> str:
    return shape if count == "one" else shape + "s"


def caption_text(count: str, colour: str, shape: str, direction: str) -> str:
    return f"{count} {colour} {plural(shape, count)} moving {direction}"


def combinations() -> list[tuple[str, str, str, str]]:
    """Every (count, colour, shape, direction) of the grammar, in a fixed order."""
    return [(c, col, sh, d) for c in COUNTS for col in COLOURS for sh in SHAPES for d in DIRECTIONS]


def caption_split(caption: str, split: SplitConfig) -> str:
    """``train``, ``val`` or ``test``: the split ingest gives a caption (the same salted hash). The
    combinations form three disjoint sets: training (pre-training, real videos, generation prompts),
    validation (choosing alignment settings) and test (the final figures)."""
    from lift_core.data.ingest import assign_split

    return assign_split(caption, split)


def is_heldout(caption: str, split: SplitConfig) -> bool:
    """Whether a caption is a held-out evaluation prompt: the ingest stage puts it in the test split
    (the same salted hash), so no pre-training clip, real video or alignment prompt shows it."""
    return caption_split(caption, split) == "test"


def heldout_captions(split: SplitConfig) -> list[str]:
    """The held-out evaluation captions, in grammar order."""
    return [caption_text(*c) for c in combinations() if is_heldout(caption_text(*c), split)]


def validation_captions(split: SplitConfig) -> list[str]:
    """The validation captions (alignment settings are chosen on them), in grammar order."""
    return [caption_text(*c) for c in combinations() if caption_split(caption_text(*c), split) == "val"]


def training_combinations(split: SplitConfig) -> list[tuple[str, str, str, str]]:
    """The combinations that the world may show in training data: neither validation nor test."""
    return [c for c in combinations() if caption_split(caption_text(*c), split) == "train"]


def _other(rng: np.random.RandomState, options, current: str) -> str:
    choices = [o for o in options if o != current]
    return choices[rng.randint(len(choices))]


def sample_spec(
    rng: np.random.RandomState, clean: bool = False, levels: tuple[int, int, int] | None = None
) -> SynthSpec:
    """A random video spec. ``levels`` = (semantic, motion, fidelity), each 0 Good, 1 Normal, 2 Bad;
    random when None. ``clean`` gives a caption-true, smooth, clean video (the "real" set)."""
    colour = list(COLOURS)[rng.randint(len(COLOURS))]
    shape = SHAPES[rng.randint(len(SHAPES))]
    count = list(COUNTS)[rng.randint(len(COUNTS))]
    direction = DIRECTIONS[rng.randint(len(DIRECTIONS))]
    if clean:
        return SynthSpec(colour, shape, count, direction, "smooth", "clean", colour, shape, count)
    semantic, motion_level, fidelity_level = levels if levels is not None else tuple(rng.randint(3, size=3))
    n_wrong = [0, 1, 2 + rng.randint(2)][semantic]
    wrong = set(rng.permutation(["colour", "shape", "count", "direction"])[:n_wrong].tolist())
    cap_colour = _other(rng, list(COLOURS), colour) if "colour" in wrong else colour
    cap_shape = _other(rng, SHAPES, shape) if "shape" in wrong else shape
    cap_count = _other(rng, list(COUNTS), count) if "count" in wrong else count
    cap_direction = _other(rng, DIRECTIONS, direction) if "direction" in wrong else None
    motion = ("smooth", "jittery", "teleporting")[motion_level]
    fidelity = ["clean", ("blur", "light-noise")[rng.randint(2)], ("blocky", "heavy-noise")[rng.randint(2)]][
        fidelity_level
    ]
    return SynthSpec(colour, shape, count, direction, motion, fidelity, cap_colour, cap_shape, cap_count,
                     cap_direction)


def _shape_mask(shape: str, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if shape == "square":
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    # An upward triangle: inside when below the apex and within the widening sides.
    top, bottom = cy - r, cy + r * 0.8
    frac = (yy - top) / max(bottom - top, 1e-6)
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= frac * r)


def shape_mask(shape: str, height: int, width: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean ``[height, width]`` mask of one ``shape`` of radius ``r`` at (cy, cx), exactly as
    ``render`` draws it (pixel centres inside the shape). The pixel oracle fits these as templates."""
    return _shape_mask(shape, height, width, cy, cx, r)


def _box_blur(frame: np.ndarray, k: int) -> np.ndarray:
    pad = k // 2
    padded = np.pad(frame.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.zeros_like(frame, dtype=np.float32)
    for dy in range(k):
        for dx in range(k):
            out += padded[dy : dy + frame.shape[0], dx : dx + frame.shape[1]]
    return out / (k * k)


def _degrade(frame: np.ndarray, kind: str, rng: np.random.RandomState) -> np.ndarray:
    f = frame.astype(np.float32)
    h, w, _ = f.shape
    if kind == "blur":
        f = _box_blur(_box_blur(f, 5), 5)
    elif kind == "light-noise":
        f = f + rng.normal(0, 28, f.shape)
    elif kind == "heavy-noise":
        f = f + rng.normal(0, 80, f.shape)
    elif kind == "blocky":
        # Broken macroblocks: big flat grey blocks over about a quarter of the frame, new ones every
        # frame. Grey is in no caption's palette, so colour, shape and count stay readable around them.
        b = max(min(h, w) // 8, 2)
        for by in range(0, h, b):
            for bx in range(0, w, b):
                if rng.rand() < 0.25:
                    f[by : by + b, bx : bx + b] = rng.uniform(70, 190)
    return np.clip(f, 0, 255).astype(np.uint8)


def _group_centre_range(size: float, extent: float) -> tuple[float, float]:
    lo, hi = extent + 1, size - extent - 1
    return (lo, hi) if lo < hi else (size / 2, size / 2)


def render(spec: SynthSpec, height: int, width: int, num_frames: int, seed: int) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of ``spec``: large saturated shapes on a plain dark background."""
    rng = np.random.RandomState(seed)
    n = COUNTS[spec.count]
    side = min(height, width)
    # Size, speed and path vary a little per video, so no two videos have the same bytes (video_id).
    r = side * (0.16 if n == 1 else 0.12) * rng.uniform(0.9, 1.1)
    span = side * 0.45 * rng.uniform(0.85, 1.1)  # smooth motion crosses almost half the frame
    dy, dx = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[spec.direction]
    # Objects sit on a line perpendicular to the motion, spaced so they never overlap.
    gap = 2.4 * r
    offsets = [(i - (n - 1) / 2) * gap for i in range(n)]
    group = (n - 1) / 2 * gap + r  # half-extent of the group across the motion
    y_range = _group_centre_range(height, group if dx else r)
    x_range = _group_centre_range(width, group if dy else r)
    # The path runs through a random point across the motion, within the frame.
    base_y = float(np.clip(height / 2 + rng.uniform(-0.15, 0.15) * side, *y_range)) if dx else height / 2
    base_x = float(np.clip(width / 2 + rng.uniform(-0.15, 0.15) * side, *x_range)) if dy else width / 2
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    prev: tuple[float, float] | None = None
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1) - 0.5
        cy, cx = base_y + dy * span * progress, base_x + dx * span * progress
        if spec.motion == "jittery":
            # Shaking around the smooth path, by up to most of an object's radius.
            cy += rng.uniform(-1, 1) * r * 0.8
            cx += rng.uniform(-1, 1) * r * 0.8
        elif spec.motion == "teleporting":
            # A random place every frame, far from the previous one.
            for _ in range(20):
                cy, cx = rng.uniform(*y_range), rng.uniform(*x_range)
                if prev is None or np.hypot(cy - prev[0], cx - prev[1]) >= side * 0.3:
                    break
            prev = (cy, cx)
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[:] = BACKGROUND
        for off in offsets:
            oy, ox = (off, 0.0) if dx else (0.0, off)
            frame[_shape_mask(spec.shape, height, width, cy + oy, cx + ox, r)] = COLOURS[spec.colour]
        frames[t] = _degrade(frame, spec.fidelity, rng) if spec.fidelity != "clean" else frame
    return frames


def prompt_suite(rng: np.random.RandomState, n: int, split: SplitConfig | None = None) -> list[dict[str, Any]]:
    """Distinct captions of the synthetic grammar in VBench's format (``prompt_en``, ``dimension``,
    ``prompt_opt``): ``n`` random ones for generation, then, with ``split``, every validation caption
    (for choosing alignment settings: ``evaluate.split=val``) and every held-out one (the final figures),
    which ingest puts in the val and test splits by the same salted hash; none of those among the ``n``."""
    combos = combinations() if split is None else training_combinations(split)
    if n > len(combos):
        outside = "" if split is None else " outside the held-out ones"
        raise ValueError(f"n_prompts={n}: the synthetic grammar has only {len(combos)} distinct captions{outside}")
    chosen = [combos[i] for i in rng.permutation(len(combos))[:n]]
    if split is not None:
        chosen += [c for c in combinations() if caption_split(caption_text(*c), split) != "train"]
    out = []
    for count, colour, shape, direction in chosen:
        caption = caption_text(count, colour, shape, direction)
        # VBench's tags for what these prompts test: colour, object class and, above one, counting.
        tags = ["color", "object_class"] + (["multiple_objects"] if count != "one" else [])
        out.append(
            {"prompt_en": caption, "dimension": tags,
             "prompt_opt": f"{caption[0].upper()}{caption[1:]} across a plain dark background, smoothly and steadily."}
        )
    return out


def _hra_entries(video_rel: str, spec: SynthSpec) -> list[dict[str, Any]]:
    from lift_core.domain import QUESTIONS

    labels, reasons = spec.labels(), spec.reasons()
    return [
        {
            "video": video_rel,
            "conversations": [
                {"from": "human", "value": f"<video>\n {spec.caption} {QUESTIONS[dim]}"},
                {"from": "gpt", "value": f"{labels[dim]}. {reasons[dim]}"},
            ],
        }
        for dim in ("semantic", "fidelity", "motion")
    ]


def write_synthetic(out: str, cfg: SyntheticConfig, heldout: SplitConfig | None = None) -> dict[str, str]:
    """Render the rated set, the clean "real" set and the prompt suite under ``out``. With ``heldout``,
    the real set (training data of alignment) shows no held-out combination, and the prompt suite
    holds every held-out one besides its ``n_prompts``."""
    rng = np.random.RandomState(cfg.seed)
    # Each dimension's levels are balanced (a third each) and shuffled independently of the others.
    levels = np.stack([rng.permutation(np.arange(cfg.n) % 3) for _ in range(3)], axis=1)
    hra: list[dict[str, Any]] = []
    for i in range(cfg.n):
        spec = sample_spec(rng, levels=tuple(int(x) for x in levels[i]))
        rel = f"videos/synth_{i:05d}.mp4"
        frames = render(spec, cfg.height, cfg.width, cfg.num_frames, seed=cfg.seed * 1_000_003 + i)
        storage.write_bytes_atomic(storage.join(out, rel), encode_mp4(frames, cfg.fps))
        hra.extend(_hra_entries(rel, spec))
    real = []
    for i in range(cfg.n_real):
        spec = sample_spec(rng, clean=True)
        while heldout is not None and caption_split(spec.caption, heldout) != "train":
            spec = sample_spec(rng, clean=True)
        rel = f"real/real_{i:05d}.mp4"
        frames = render(spec, cfg.height, cfg.width, cfg.num_frames, seed=cfg.seed * 1_000_003 + 500_000 + i)
        storage.write_bytes_atomic(storage.join(out, rel), encode_mp4(frames, cfg.fps))
        real.append({"video_id": f"real_{i:05d}", "video": rel, "caption": spec.caption})
    prompts = prompt_suite(rng, cfg.n_prompts, heldout)
    outputs = {
        "hra_json": storage.join(out, "lift-hra.json"),
        "real_json": storage.join(out, "hd-vila.json"),
        "prompts_json": storage.join(out, "prompts.json"),
        "videos_root": out,
    }
    storage.write_bytes_atomic(outputs["hra_json"], json.dumps(hra, indent=1).encode())
    storage.write_bytes_atomic(outputs["real_json"], json.dumps(real, indent=1).encode())
    storage.write_bytes_atomic(outputs["prompts_json"], json.dumps(prompts, indent=1).encode())
    return outputs


def label_counts(hra_json: str) -> dict[str, int]:
    """``label_<dim>_<Label>`` counts of a written LiFT-HRA file (a check that every level is present)."""
    from lift_core.domain import dimension_of_question

    counts: dict[str, int] = {}
    for entry in storage.read_json(hra_json):
        dim = dimension_of_question(entry["conversations"][0]["value"])
        label = entry["conversations"][1]["value"].split(".", 1)[0]
        counts[f"label_{dim}_{label}"] = counts.get(f"label_{dim}_{label}", 0) + 1
    return dict(sorted(counts.items()))


def stage_out(cfg: PipelineConfig) -> tuple[str, str]:
    """(key, output dir) of the synth stage: the key hashes ``data.synthetic`` and the code version."""
    syn = cfg.data.synthetic
    if syn is None:
        raise ValueError("data.synthetic is not set in the config")
    key = storage.stage_key("synth", [], syn.fingerprint(), {"heldout": cfg.data.split.model_dump(mode="json")})
    return key, storage.stage_dir(cfg.run_root, "synth", key)


def run_synth(cfg: PipelineConfig, progress: ProgressFn | None = None) -> storage.StageResult:
    """The synth stage: ``cfg.data.synthetic`` rendered under ``<run_root>/synth/<key>/``."""
    progress = resolve(progress)
    key, out = stage_out(cfg)
    syn = cfg.data.synthetic
    if done := storage.load_success(out):
        return done
    progress(0.0, f"rendering {syn.n} rated + {syn.n_real} real videos at {syn.height}x{syn.width}")
    outputs = write_synthetic(out, syn, cfg.data.split)
    counts = {"rated_videos": syn.n, "real_videos": syn.n_real, "prompts": len(storage.read_json(outputs["prompts_json"]))}
    counts.update(label_counts(outputs["hra_json"]))
    progress(1.0, "synthetic data written")
    return storage.mark_success(storage.StageResult("synth", key, out, outputs, counts))


__all__ = ["LABELS", "SynthSpec", "caption_split", "combinations", "heldout_captions", "is_heldout", "training_combinations", "label_counts", "prompt_suite", "render", "run_synth", "sample_spec", "shape_mask", "write_synthetic"]
