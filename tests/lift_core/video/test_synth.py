from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np

from data_catalog.readers import read_source
from lift_core.config import SyntheticConfig
from lift_core.video.io import read_video
from lift_core.video.synth import SynthSpec, render, write_synthetic


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_all_levels(tmp_path):
    cfg = SyntheticConfig(n=36, n_real=3, n_prompts=5, seed=7)
    a = write_synthetic(str(tmp_path / "a"), cfg)
    write_synthetic(str(tmp_path / "b"), cfg)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_synthetic(str(tmp_path / "c"), cfg.model_copy(update={"seed": 8}))
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")

    res = read_source("lift-hra", a["hra_json"], a["videos_root"])
    assert len(res.records) == 36 and not res.rejects
    for dim in ("semantic", "motion", "fidelity"):
        counts = collections.Counter(r[f"label_{dim}"] for r in res.records)
        assert set(counts) == {"Good", "Normal", "Bad"}, (dim, counts)
    real = json.loads(Path(a["real_json"]).read_text())
    assert len(real) == 3 and all(Path(a["videos_root"], r["video"]).exists() for r in real)
    assert len(read_source("vbench-prompts", a["prompts_json"]).records) == 5


def test_labels_follow_construction():
    spec = SynthSpec("red", "square", "two", "left", "teleporting", "blocky", "blue", "square", "three")
    assert spec.labels() == {"semantic": "Bad", "motion": "Bad", "fidelity": "Bad"}
    assert spec.caption == "three blue squares moving left"
    assert "two red squares" in spec.reasons()["semantic"]
    ok = SynthSpec("red", "circle", "one", "up", "smooth", "clean", "red", "circle", "one")
    assert ok.labels() == {"semantic": "Good", "motion": "Good", "fidelity": "Good"}


def test_rendered_properties_are_visible_at_critic_size():
    base = dict(colour="red", shape="circle", count="one", direction="right", caption_colour="red",
                caption_shape="circle", caption_count="one")
    smooth = render(SynthSpec(motion="smooth", fidelity="clean", **base), 64, 64, 17, seed=0)
    jumpy = render(SynthSpec(motion="teleporting", fidelity="clean", **base), 64, 64, 17, seed=0)
    noisy = render(SynthSpec(motion="smooth", fidelity="heavy-noise", **base), 64, 64, 17, seed=0)

    def centroid_steps(frames):
        cs = [np.argwhere(f[..., 0] > 150).mean(0) for f in frames]
        return np.abs(np.diff(np.array(cs), axis=0)).sum(1)

    assert centroid_steps(smooth).std() < 1.0  # constant speed
    assert centroid_steps(jumpy).std() > 3.0
    assert np.abs(noisy.astype(int) - smooth.astype(int)).mean() > 30
    # The red dominates where the shape is drawn.
    assert (smooth[0][..., 0] > 150).sum() > 100


def test_videos_decode(tmp_path):
    out = write_synthetic(str(tmp_path), SyntheticConfig(n=2, n_real=1, n_prompts=1))
    v = read_video(str(tmp_path / "videos/synth_00000.mp4"), 8, 56, 56)
    assert v.frames.shape == (8, 56, 56, 3) and v.num_frames_total == 17
    assert out["videos_root"] == str(tmp_path)
