"""A pixel oracle for the synthetic world of ``lift_core.video.synth``: no model, no learning.

It reads, from the pixels alone, what a video of that world shows: the colour of its saturated
shapes, their shape, how many there are and which way they move. ``adherence`` compares that reading
with what a caption asks for. Because it never looks at a critic, alignment judged by it cannot be
the critic's own signal coming back (DESIGN.md, "Evaluation that cannot be fooled").

How each attribute is read (all thresholds are relative to the video itself, so blurred, noisy or
dimmer approximations of the world, as a tiny T2V model draws them, still read):

- **foreground**: chroma (max - min over RGB) of each pixel, after a light smoothing when the video
  is noisy. The background is near-grey and every palette colour is strongly saturated. The
  threshold is halfway between the video's median chroma (its background) and its robust peak; a
  video whose peak stays within ``MIN_PEAK_CHROMA`` of its background shows no object.
- **colour**: the chroma-weighted vote of foreground pixels for the palette colour of nearest hue.
- **count**: 4-connected components of the foreground per frame, keeping those of at least a
  minimum area and at least a quarter of the frame's largest one (all objects of a video have the
  same size). A second, higher threshold separates shapes that blur has merged. The video's count is
  the most common per-frame count.
- **shape**: analysis by synthesis. For a few frames that show the video's count, each hypothesis
  (circle, square, triangle) is drawn with synth's own ``shape_mask`` at every object's centroid, at
  a few radii around the one the objects' mass implies, blurred by a Gaussian of each of a few
  widths, and scaled by a least-squares amplitude; the hypothesis with the smallest residual gets
  the frame's vote. Blur moves neither centroids nor mass, so a blurred square still fits a blurred
  square's model better than a circle's, and neighbours merged by blur are modelled together.
- **direction**: the least-squares slope of the foreground's centroid over frames; the dominant axis
  and its sign, if the displacement is at least a few percent of the frame.

An attribute that cannot be read is ``None`` (``count`` is 0), and its adherence is 0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from lift_core.video.synth import COLOURS, COUNTS, DIRECTIONS, SHAPES, shape_mask

ATTRIBUTES = ("colour", "shape", "count", "direction")

# A video whose robust peak chroma stays within this of its background's shows no object (the
# background's chroma is ~6, the palette's ~165-195).
MIN_PEAK_CHROMA = 60.0
PEAK_PERCENTILE = 99.5
# The foreground threshold, as a fraction of the peak's height over the background, and a floor.
FOREGROUND_FRACTION = 0.5
MIN_CHROMA = 30.0
# The higher threshold that splits shapes merged by blur.
SPLIT_FRACTION = 0.75
# A component smaller than this share of the frame (or than a quarter of the frame's largest) is noise.
MIN_AREA_FRACTION = 0.003
MIN_AREA_PX = 4
RELATIVE_AREA = 0.25
# The centroid must travel at least this share of the frame's side to give a direction.
MIN_DISPLACEMENT = 0.05
# Per-channel noise std (0..255) above which frames are smoothed (Gaussian, in pixels) first.
NOISE_SMOOTH_ABOVE = 6.0
NOISE_SMOOTH_SIGMA = 0.8
# Template blurs tried for the shape fit, in pixels of a 32-pixel frame (scaled with the frame).
TEMPLATE_BLURS = (0.0, 0.4, 0.7, 1.0, 1.3, 1.6, 2.0, 2.5)
# Template radii tried, relative to the radius that the object's mass implies.
TEMPLATE_RADII = (0.8, 0.9, 1.0, 1.1)
# Frames per video whose objects vote on the shape.
SHAPE_FRAMES = 3
# Frames whose shorter side is longer than this are block-averaged down to it first.
MAX_SIDE = 64

_COUNT_WORDS = {n: word for word, n in COUNTS.items()}


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of float RGB ``[..., 3]`` (HSV's hue; 0 where chroma is 0)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    c = np.where(mx - mn > 0, mx - mn, 1.0)
    h = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4))
    return (h * 60.0) % 360.0


_PALETTE_NAMES = tuple(COLOURS)
_PALETTE_HUES = _hue(np.array([COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float64))


@dataclass(frozen=True)
class Reading:
    """What the pixels show. ``None`` (``count`` 0) where an attribute cannot be read."""

    colour: str | None
    shape: str | None
    count: int
    direction: str | None
    # Diagnostics: frames in which an object was found, and each attribute's vote share.
    frames_with_objects: int = 0
    confidence: dict[str, float] = field(default_factory=dict)

    @property
    def count_word(self) -> str | None:
        """The caption word for ``count`` (``None`` outside the vocabulary, e.g. 0 or 4)."""
        return _COUNT_WORDS.get(self.count)

    def as_dict(self) -> dict:
        return asdict(self) | {"count_word": self.count_word}


@dataclass(frozen=True)
class CaptionAttributes:
    """What a caption of synth's grammar asks for (``count`` as its word, e.g. ``"two"``)."""

    colour: str
    shape: str
    count: str
    direction: str


# --------------------------------------------------------------------------- captions
def parse_caption(caption: str) -> CaptionAttributes:
    """The attributes of a caption of synth's grammar (``caption_text``: "two red circles moving
    left"; also its VBench ``prompt_opt`` wording). Raises ValueError if one is missing or two
    different values of one attribute are named."""
    words = re.findall(r"[a-z]+", caption.lower())
    singular = [w[:-1] if w.endswith("s") and w[:-1] in SHAPES else w for w in words]

    def one_of(name: str, vocabulary: Iterable[str], tokens: list[str]) -> str:
        found = list(dict.fromkeys(t for t in tokens if t in set(vocabulary)))
        if len(found) != 1:
            what = "no" if not found else f"several ({', '.join(found)})"
            raise ValueError(f"caption {caption!r} names {what} {name}; expected one of {sorted(vocabulary)}")
        return found[0]

    # The direction is the word after "moving" where there is one ("up" may appear elsewhere).
    after_moving = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "moving"]
    direction = one_of("direction", DIRECTIONS, after_moving if after_moving else words)
    return CaptionAttributes(
        colour=one_of("colour", COLOURS, words),
        shape=one_of("shape", SHAPES, singular),
        count=one_of("count", COUNTS, words),
        direction=direction,
    )


# --------------------------------------------------------------------------- reading
def _noise_sigma(frame: np.ndarray) -> float:
    """Per-channel Gaussian noise std of a float frame ``[H, W, 3]``: the median absolute Laplacian
    (Immerkaer's kernel, 6 sigma std under noise), which the shapes' sparse edges do not move."""
    h, w = frame.shape[:2]
    if h < 3 or w < 3:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)[..., None]
    lap = ndimage.convolve(frame, kernel, mode="reflect")[1:-1, 1:-1]
    return float(np.median(np.abs(lap)) / (0.6745 * 6.0))


def _objects(chroma: np.ndarray, threshold: float, min_area: float) -> tuple[np.ndarray, list[int]]:
    """Labels of the 4-connected components above ``threshold`` and the ids of those that pass the
    area filters (at least ``min_area`` and a quarter of the largest: a video's objects are alike)."""
    labels, n = ndimage.label(chroma > threshold)
    if n == 0:
        return labels, []
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep_above = max(min_area, RELATIVE_AREA * float(areas.max()))
    return labels, [i + 1 for i in range(n) if areas[i] >= keep_above]


def _shape_geometry() -> dict[str, tuple[float, float, float]]:
    """(area / r², centroid row offset / r, centroid column offset / r) of each of synth's shapes,
    measured on synth's own masks at a large radius (the geometry is synth's, not restated here)."""
    out = {}
    for shape in SHAPES:
        mask = shape_mask(shape, 400, 400, 200.0, 200.0, 100.0)
        ys, xs = np.nonzero(mask)
        out[shape] = (float(mask.sum()) / 100.0**2, (ys.mean() - 200.0) / 100.0, (xs.mean() - 200.0) / 100.0)
    return out


_GEOMETRY = _shape_geometry()


def _paint(out: np.ndarray, shape: str, cy: float, cx: float, r: float, ss: int) -> None:
    """Add the pixel coverage (0..1, supersampled ``ss`` x ``ss``) of one ``shape`` to ``out``."""
    h, w = out.shape
    reach = 1.2 * r + 2
    y0, y1 = max(int(cy - reach), 0), min(int(np.ceil(cy + reach)) + 1, h)
    x0, x1 = max(int(cx - reach), 0), min(int(np.ceil(cx + reach)) + 1, w)
    if y1 <= y0 or x1 <= x0:
        return
    off = (ss - 1) / 2
    mask = shape_mask(shape, (y1 - y0) * ss, (x1 - x0) * ss, (cy - y0) * ss + off, (cx - x0) * ss + off, r * ss)
    out[y0:y1, x0:x1] += mask.reshape(y1 - y0, ss, x1 - x0, ss).sum(axis=(1, 3), dtype=np.float64) / (ss * ss)


def _gaussian_transfer(shape: tuple[int, int], sigmas: np.ndarray) -> np.ndarray:
    """``[S, H, W//2+1]`` transfer functions of Gaussian blurs of widths ``sigmas`` (for rfft2)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2.0 * np.pi**2 * (sigmas[:, None, None] ** 2) * (fy**2 + fx**2)[None])


def _fit_shape(
    frame: np.ndarray, centres: list[tuple[float, float]], mass: float, blur_scale: float, ss: int
) -> tuple[str, float]:
    """The shape whose templates explain ``frame`` best, and the blur they were fitted with.

    ``frame`` is chroma over the background, normalised so that objects are about 1; ``centres``
    are the objects' centroids (blur moves them not) and ``mass`` their mean mass. The model of a
    hypothesis is one frame: synth's own mask of the shape, with sub-pixel coverage, at every centre,
    at a few radii around the one the mass implies, blurred by a Gaussian of each candidate width,
    times a least-squares amplitude. Blur spreads mass but keeps it, so a blurred square still fits
    the blurred squares' model better than any circles'; and neighbours that blur has merged are
    modelled together, not cut apart. The smallest residual wins."""
    h, w = frame.shape
    sigmas = np.asarray(TEMPLATE_BLURS, dtype=np.float64) * blur_scale
    pad = int(np.ceil(3 * sigmas.max()))
    # A zero margin, so that the blur does not wrap around; sizes that the FFT is fast on.
    fft_shape = (sp_fft.next_fast_len(h + pad, real=True), sp_fft.next_fast_len(w + pad, real=True))
    transfer = _gaussian_transfer(fft_shape, sigmas)
    best: tuple[float, str, float] | None = None
    for shape in SHAPES:
        area_k, off_y, off_x = _GEOMETRY[shape]
        r0 = np.sqrt(max(mass, 1e-9) / area_k)
        models = np.zeros((len(TEMPLATE_RADII), h, w))
        for j, r in enumerate(r0 * np.asarray(TEMPLATE_RADII)):
            for cy, cx in centres:
                _paint(models[j], shape, cy - off_y * r, cx - off_x * r, r, ss)
        spectra = sp_fft.rfft2(models, s=fft_shape)  # [R, ...]
        blurred = sp_fft.irfft2(spectra[:, None] * transfer[None], s=fft_shape)[..., :h, :w]  # [R, S, h, w]
        amplitude = (blurred * frame).sum(axis=(-2, -1)) / np.maximum((blurred**2).sum(axis=(-2, -1)), 1e-9)
        residual = ((frame - amplitude[..., None, None] * blurred) ** 2).sum(axis=(-2, -1))
        i_r, i_s = np.unravel_index(int(residual.argmin()), residual.shape)
        if best is None or residual[i_r, i_s] < best[0]:
            best = (float(residual[i_r, i_s]), shape, float(sigmas[i_s]))
    assert best is not None
    return best[1], best[2]


def read_video(frames: np.ndarray) -> Reading:
    """Read colour, shape, count and direction of a uint8 ``[T, H, W, 3]`` video of synth's world."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {arr.dtype} {arr.shape}")
    t_len, h, w, _ = arr.shape
    if t_len == 0 or h == 0 or w == 0:
        raise ValueError(f"frames must not be empty, got {arr.shape}")
    empty = Reading(None, None, 0, None, 0, {})
    video = arr.astype(np.float64)
    if min(h, w) > MAX_SIDE:
        # The synthetic world has no detail finer than a few pixels at 32: block-average big frames.
        f = -(-min(h, w) // MAX_SIDE)
        h, w = h // f, w // f
        video = video[:, : h * f, : w * f].reshape(t_len, h, f, w, f, 3).mean(axis=(2, 4))
    # Smooth noisy videos (one noise estimate for the whole video) so that noise specks do not pass.
    noise = float(np.median([_noise_sigma(f) for f in video[:: max(1, t_len // 4)]]))
    if noise > NOISE_SMOOTH_ABOVE:
        video = ndimage.gaussian_filter(video, sigma=(0, NOISE_SMOOTH_SIGMA, NOISE_SMOOTH_SIGMA, 0))
    r_, g_, b_ = video[..., 0], video[..., 1], video[..., 2]
    chroma = np.maximum(np.maximum(r_, g_), b_) - np.minimum(np.minimum(r_, g_), b_)
    background = float(np.median(chroma))
    peak = float(np.percentile(chroma, PEAK_PERCENTILE))
    contrast = peak - background
    if contrast < MIN_PEAK_CHROMA:
        return empty
    threshold = background + max(MIN_CHROMA, FOREGROUND_FRACTION * contrast)
    split_threshold = background + max(MIN_CHROMA, SPLIT_FRACTION * contrast)
    min_area = max(MIN_AREA_PX, MIN_AREA_FRACTION * h * w)

    colour_votes = np.zeros(len(_PALETTE_NAMES))
    per_frame: dict[int, tuple[np.ndarray, list[int]]] = {}  # t -> (labels, object ids)
    centroids: list[tuple[int, float, float]] = []
    for t in range(t_len):
        labels, ids = _objects(chroma[t], threshold, min_area)
        if not ids:
            continue
        fg = np.isin(labels, ids)
        # Blur merges neighbouring shapes; the higher threshold separates them again.
        split_labels, split_ids = _objects(chroma[t], split_threshold, min_area / 2)
        per_frame[t] = (split_labels, split_ids) if len(split_ids) > len(ids) else (labels, ids)
        weights = chroma[t][fg] - background
        dist = np.abs(_hue(video[t][fg])[:, None] - _PALETTE_HUES[None, :])
        nearest = np.minimum(dist, 360.0 - dist).argmin(axis=1)
        colour_votes += np.bincount(nearest, weights=weights, minlength=len(_PALETTE_NAMES))
        ys, xs = np.nonzero(fg)
        centroids.append((t, float(np.average(ys, weights=weights)), float(np.average(xs, weights=weights))))
    if not per_frame:
        return empty

    colour = _PALETTE_NAMES[int(colour_votes.argmax())]
    count_votes = Counter(len(ids) for _, ids in per_frame.values())
    # Ties go to the larger count (frames where shapes touch show fewer, never more).
    count = max(count_votes, key=lambda c: (count_votes[c], c))
    shape_votes = _shape_votes(chroma, per_frame, count, background, contrast)
    shape = max(shape_votes, key=lambda s: shape_votes[s]) if shape_votes else None
    direction, travel = _direction(centroids, min(h, w))
    confidence = {
        "colour": float(colour_votes.max() / colour_votes.sum()),
        "shape": shape_votes[shape] / sum(shape_votes.values()) if shape else 0.0,
        "count": count_votes[count] / len(per_frame),
        "travel": travel,
    }
    return Reading(colour, shape, int(count), direction, len(per_frame), confidence)


def _shape_votes(
    chroma: np.ndarray,
    per_frame: dict[int, tuple[np.ndarray, list[int]]],
    count: int,
    background: float,
    contrast: float,
) -> Counter[str]:
    """One vote per frame, for a few frames spread over the video that show the video's count (no
    shapes merged beyond splitting): the shape whose model fits the frame best."""
    _, h, w = chroma.shape
    side = min(h, w)
    blur_scale = side / 32.0  # the template blurs are relative to the shapes, which scale with the frame
    ss = max(1, round(128 / side))  # sub-pixel coverage: finer for small frames
    reach = int(np.ceil(2 * max(TEMPLATE_BLURS) * blur_scale)) + 1
    frames = [t for t in sorted(per_frame) if len(per_frame[t][1]) == count] or sorted(per_frame)
    picks = [frames[i] for i in sorted({round(x) for x in np.linspace(0, len(frames) - 1, SHAPE_FRAMES)})]
    votes: Counter[str] = Counter()
    for t in picks:
        labels, ids = per_frame[t]
        objects = np.where(np.isin(labels, ids), labels, 0)
        # Every pixel near an object belongs to its nearest object: its mass and centroid.
        dist, (iy, ix) = ndimage.distance_transform_edt(objects == 0, return_indices=True)
        owner = np.where(dist <= reach, objects[iy, ix], 0)
        norm = (chroma[t] - background) / contrast
        index = np.asarray(ids)
        masses = ndimage.sum_labels(norm, owner, index)
        centres = ndimage.center_of_mass(norm, owner, index)
        # The fit needs only the objects' neighbourhood.
        ys, xs = np.nonzero(owner)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        local_centres = [(float(c[0]) - y0, float(c[1]) - x0) for c in centres]
        shape, _ = _fit_shape(norm[y0:y1, x0:x1], local_centres, float(np.mean(masses)), blur_scale, ss)
        votes[shape] += 1
    return votes


def _direction(centroids: list[tuple[int, float, float]], side: int) -> tuple[str | None, float]:
    """The direction of the centroids' least-squares motion and its travel (share of the side)."""
    if len(centroids) < 2:
        return None, 0.0
    ts, ys, xs = (np.array(v, dtype=np.float64) for v in zip(*centroids))
    if np.ptp(ts) == 0:
        return None, 0.0
    slope_y, slope_x = np.polyfit(ts, ys, 1)[0], np.polyfit(ts, xs, 1)[0]
    span = float(ts.max() - ts.min())
    dy, dx = slope_y * span, slope_x * span
    travel = float(max(abs(dy), abs(dx)) / side)
    if travel < MIN_DISPLACEMENT:
        return None, travel
    if abs(dx) >= abs(dy):
        return ("right" if dx > 0 else "left"), travel
    return ("down" if dy > 0 else "up"), travel


# --------------------------------------------------------------------------- adherence
def reading_adherence(reading: Reading, caption: str | CaptionAttributes) -> dict[str, float]:
    """Per-attribute adherence (1 where the reading matches the caption, else 0) and their mean."""
    want = parse_caption(caption) if isinstance(caption, str) else caption
    scores = {
        "colour": float(reading.colour == want.colour),
        "shape": float(reading.shape == want.shape),
        "count": float(reading.count_word == want.count),
        "direction": float(reading.direction == want.direction),
    }
    scores["overall"] = float(np.mean([scores[a] for a in ATTRIBUTES]))
    return scores


def adherence(frames: np.ndarray, caption: str | CaptionAttributes) -> dict[str, float]:
    """``{"colour", "shape", "count", "direction": 0 or 1, "overall": their mean}`` of a video
    (uint8 ``[T, H, W, 3]``) against a caption of synth's grammar."""
    return reading_adherence(read_video(frames), caption)


__all__ = [
    "ATTRIBUTES",
    "CaptionAttributes",
    "Reading",
    "adherence",
    "parse_caption",
    "read_video",
    "reading_adherence",
]
