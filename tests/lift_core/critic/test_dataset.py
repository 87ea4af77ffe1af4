"""Critic examples from a manifest and decoded frames; bad rows are quarantined, never dropped."""

from __future__ import annotations

import numpy as np
import pytest

from lift_core import storage
from lift_core.critic.dataset import FrameStore, drop_without_frames, examples_from_rows, frames_index, load_examples
from lift_core.video.frames import read_frames


def _row(**kw):
    row = {"video_id": "v1", "uri": "u1", "caption": "one red circle moving up", "source": "lift-hra", "split": "train",
           "label_semantic": "Good", "reason_semantic": "The video matches the caption.",
           "label_fidelity": "Bad", "reason_fidelity": "The frames are blurred.",
           "label_motion": None, "reason_motion": None}
    row.update(kw)
    return row


def test_one_example_per_rated_dimension_and_quarantine():
    rows = [_row(), _row(video_id="v2", uri="u2", label_semantic="Excellent"), _row(video_id="v3", source="hd-vila")]
    examples, quarantine = examples_from_rows(rows)
    assert [(e.video_id, e.dimension, e.label) for e in examples] == [
        ("v1", "semantic", "Good"), ("v1", "fidelity", "Bad"), ("v2", "fidelity", "Bad")]
    assert examples[0].answer == "Good. The video matches the caption."
    assert len(quarantine) == 1
    assert quarantine[0]["video_id"] == "v2" and "unknown semantic label 'Excellent'" in quarantine[0]["error"]
    assert quarantine[0]["stage"] == "train_critic"


def test_examples_from_the_manifest_and_frames(rated_data):
    examples, quarantine = load_examples(rated_data["manifest"])
    assert len(examples) == 12 * 3 and not quarantine  # the hd-vila row has no ratings
    assert {e.split for e in examples} == {"train", "test"}
    available = frames_index(rated_data["frames"])
    assert len(available) == 12
    keep, missing = drop_without_frames(examples, available - {examples[0].video_id}, {examples[0].video_id: "u0"})
    assert len(keep) == 33
    assert missing == [{"uri": "u0", "video_id": examples[0].video_id, "stage": "train_critic",
                        "error": "no decoded frames for this rated video"}]


def test_frame_store_round_trips_and_rejects_mixed_sizes(rated_data, tmp_path):
    ids = sorted(frames_index(rated_data["frames"]))
    store = FrameStore.build(rated_data["frames"], ids[:5], str(tmp_path / "store"))
    assert len(store) == 5 and store.frame_shape == (8, 56, 56, 3)
    direct = read_frames(rated_data["frames"], ids[:5])
    for vid in ids[:5]:
        np.testing.assert_array_equal(store[vid], direct[vid])
    assert FrameStore.build(rated_data["frames"], ids[:5], str(tmp_path / "store")).index == store.index  # reused
    with pytest.raises(KeyError, match="have no frames"):
        FrameStore.build(rated_data["frames"], ids[:2] + ["0000000000000000"], str(tmp_path / "other"))

    from lift_core.video.frames import frames_table

    rows = [{"video_id": "a", "frames": np.zeros((8, 56, 56, 3), np.uint8), "frame_indices": list(range(8)),
             "num_frames_total": 8, "fps": 8.0},
            {"video_id": "b", "frames": np.zeros((8, 28, 28, 3), np.uint8), "frame_indices": list(range(8)),
             "num_frames_total": 8, "fps": 8.0}]
    storage.write_table(str(tmp_path / "mixed" / "part.parquet"), frames_table(rows))
    with pytest.raises(ValueError, match="one decode size"):
        FrameStore.build(str(tmp_path / "mixed"), ["a", "b"], str(tmp_path / "mixed-store"))


def test_videos_without_frames_carry_decode_reason_or_fail(rated_data, tmp_path):
    """Issue 18: a rated video with no frames is quarantined with decode's own reason; one that decode
    never quarantined (its shard was lost) is an error, never a silent skip."""
    from lift_core import storage
    from lift_core.schemas import QUARANTINE_SCHEMA, quarantine_row, rows_to_table
    from lift_core.video.decode_stage import PARAMS_FILE, QUARANTINE_FILE, MissingFramesError

    examples, _ = load_examples(rated_data["manifest"])
    first, second = sorted({e.video_id for e in examples})[:2]
    decode_out = tmp_path / "decode"
    (decode_out / "frames").mkdir(parents=True)
    (decode_out / PARAMS_FILE).write_text("{}")
    storage.write_table(str(decode_out / QUARANTINE_FILE), rows_to_table(
        [quarantine_row("u0", "decode", "moov atom not found", first)], QUARANTINE_SCHEMA))
    available = frames_index(rated_data["frames"])

    keep, missing = drop_without_frames(examples, available - {first}, {first: "u0"}, [str(decode_out / "frames")])
    assert [m["error"] for m in missing] == ["no decoded frames: the decode stage quarantined it (moov atom not found)"]
    with pytest.raises(MissingFramesError, match=second):
        drop_without_frames(examples, available - {first, second}, {}, [str(decode_out / "frames")])
