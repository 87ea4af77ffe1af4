"""Synthetic LiFT-HRA data: determinism, formats, balanced labels and properties visible at critic size."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lift_core import storage
from lift_core.config import SyntheticConfig
from lift_core.data.sources import read_source
from lift_core.domain import QUESTIONS
from lift_core.video.io import read_video
from lift_core.video.synth import COLOURS, SynthSpec, render, write_synthetic


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synth_a(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = SyntheticConfig(n=36, n_real=4, n_prompts=6, seed=7)
    return root, cfg, write_synthetic(str(root / "a"), cfg)


def test_same_seed_same_bytes(synth_a):
    root, cfg, _ = synth_a
    write_synthetic(str(root / "b"), cfg)
    assert _digest(root / "a") == _digest(root / "b")
    write_synthetic(str(root / "c"), cfg.model_copy(update={"seed": 8, "n": 6, "n_real": 1}))
    assert (root / "a/videos/synth_00000.mp4").read_bytes() != (root / "c/videos/synth_00000.mp4").read_bytes()


def test_hra_file_is_lifts_format_with_balanced_labels(synth_a):
    _, _, out = synth_a
    entries = json.loads(Path(out["hra_json"]).read_text())
    assert len(entries) == 36 * 3
    for e in entries:
        human, gpt = e["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<video>\n ") and any(human["value"].endswith(q) for q in QUESTIONS.values())
        label, reason = gpt["value"].split(". ", 1)
        assert label in ("Good", "Normal", "Bad") and reason.endswith(".")
    res = read_source("lift-hra", out["hra_json"], out["videos_root"])
    assert len(res.records) == 36 and not res.rejects and res.ratings == 108
    for dim in ("semantic", "motion", "fidelity"):
        # Every level of every dimension, a third each.
        assert collections.Counter(r[f"label_{dim}"] for r in res.records) == {"Good": 12, "Normal": 12, "Bad": 12}
    # Levels are drawn independently: not all Good videos are Good on every dimension.
    all_good = sum(all(r[f"label_{d}"] == "Good" for d in ("semantic", "motion", "fidelity")) for r in res.records)
    assert all_good < 12
    # Reasons state the cause.
    bad_semantic = next(r for r in res.records if r["label_semantic"] == "Bad")
    assert bad_semantic["reason_semantic"].startswith("The caption says ") and "but the video shows" in bad_semantic["reason_semantic"]


def test_every_video_has_its_own_content_id(synth_a):
    _, _, out = synth_a
    files = sorted(Path(out["videos_root"]).rglob("*.mp4"))
    assert len(files) == 40
    assert len({storage.content_id(str(f)) for f in files}) == 40


def test_real_set_and_prompt_suite_formats(synth_a):
    _, _, out = synth_a
    real = json.loads(Path(out["real_json"]).read_text())
    assert len(real) == 4 and all(set(r) == {"video_id", "video", "caption"} for r in real)
    assert all(Path(out["videos_root"], r["video"]).exists() for r in real)
    res = read_source("lift-inference", out["real_json"], out["videos_root"])
    assert len(res.records) == 4 and not res.rejects
    prompts = json.loads(Path(out["prompts_json"]).read_text())
    assert len(prompts) == 6 and len({p["prompt_en"] for p in prompts}) == 6
    assert all(set(p) == {"prompt_en", "dimension", "prompt_opt"} and "color" in p["dimension"] for p in prompts)
    # Same grammar as the captions: "<count> <colour> <shape(s)> moving <direction>".
    words = prompts[0]["prompt_en"].split()
    assert words[0] in ("one", "two", "three") and words[1] in COLOURS and words[3] == "moving"
    with pytest.raises(ValueError, match="distinct captions"):
        write_synthetic(str(Path(out["videos_root"]).parent / "too-many"), SyntheticConfig(n=0, n_real=0, n_prompts=1000))


def test_labels_follow_construction():
    spec = SynthSpec("red", "square", "two", "left", "teleporting", "blocky", "blue", "square", "three")
    assert spec.labels() == {"semantic": "Bad", "motion": "Bad", "fidelity": "Bad"}
    assert spec.caption == "three blue squares moving left"
    assert spec.reasons()["semantic"] == "The caption says three blue squares but the video shows two red squares."
    one_wrong = SynthSpec("red", "circle", "one", "up", "jittery", "blur", "green", "circle", "one")
    assert one_wrong.labels() == {"semantic": "Normal", "motion": "Normal", "fidelity": "Normal"}
    ok = SynthSpec("red", "circle", "one", "up", "smooth", "clean", "red", "circle", "one")
    assert ok.labels() == {"semantic": "Good", "motion": "Good", "fidelity": "Good"}
    assert ok.caption == "one red circle moving up"


def _spec(**kw) -> SynthSpec:
    base = dict(colour="red", shape="circle", count="one", direction="right", motion="smooth", fidelity="clean",
                caption_colour="red", caption_shape="circle", caption_count="one")
    return SynthSpec(**{**base, **kw})


def test_rendered_properties_are_visible_at_critic_size():
    smooth = render(_spec(), 64, 64, 17, seed=0)
    jittery = render(_spec(motion="jittery"), 64, 64, 17, seed=0)
    jumpy = render(_spec(motion="teleporting"), 64, 64, 17, seed=0)

    def centroid_steps(frames):
        cs = [np.argwhere((f[..., 0] > 150) & (f[..., 1] < 100)).mean(0) for f in frames]
        return np.hypot(*np.diff(np.array(cs), axis=0).T)

    s, j, t = centroid_steps(smooth), centroid_steps(jittery), centroid_steps(jumpy)
    assert s.std() < 0.5 and s.mean() > 1.2  # constant, visible speed
    assert j.std() > 1.5 and t.mean() > 2 * j.mean()  # shaking; jumps far bigger still
    assert (smooth[0][..., 0] > 150).sum() > 150  # a large shape

    mask = (smooth[..., 0] > 150) & (smooth[..., 1] < 100)
    clean = smooth.astype(int)

    def sharp_edges(x):
        return int((np.abs(np.diff(x, axis=2)) > 60).sum())

    diffs = {}
    for fidelity in ("blur", "light-noise", "heavy-noise", "blocky"):
        degraded = render(_spec(fidelity=fidelity), 64, 64, 17, seed=0).astype(int)
        diffs[fidelity] = np.abs(degraded - clean).mean()
        # The caption's attributes stay readable: the object is still clearly red where it is drawn.
        inside = degraded[mask]
        assert inside[:, 0].mean() - inside[:, 1].mean() > 60, fidelity
        if fidelity == "blur":
            assert sharp_edges(degraded) < 0.2 * sharp_edges(clean)  # the edges are gone
    assert diffs["light-noise"] > 10 and diffs["heavy-noise"] > 1.8 * diffs["light-noise"]
    assert diffs["blocky"] > 15


def test_videos_decode_at_critic_size(synth_a):
    _, _, out = synth_a
    v = read_video(str(Path(out["videos_root"]) / "videos/synth_00000.mp4"), 8, 56, 56)
    assert v.frames.shape == (8, 56, 56, 3) and v.num_frames_total == 17 and v.fps == pytest.approx(8.0)


def test_a_caption_with_the_wrong_direction_is_semantically_wrong():
    """The critic judges what the oracle judges: direction counts, as colour, shape and count do."""
    from lift_core.video.synth import SynthSpec, sample_spec

    spec = SynthSpec("red", "circle", "one", "left", "smooth", "clean", "red", "circle", "one", "right")
    assert spec.caption == "one red circle moving right" and spec.wrong_attributes == ["direction"]
    assert spec.labels()["semantic"] == "Normal"
    assert "moving right" in spec.reasons()["semantic"] and "moving left" in spec.reasons()["semantic"]
    rng = np.random.RandomState(0)
    wrong = [a for _ in range(600) for a in sample_spec(rng, levels=(1, 0, 0)).wrong_attributes]
    assert set(wrong) == {"colour", "shape", "count", "direction"}
    assert wrong.count("direction") > 100  # a quarter of the one-wrong-attribute videos
