"""Reward arithmetic, the metrics summary and LiFT's output format: no model needed."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from lift_core import storage
from lift_core.config import CriticConfig, ScoreConfig
from lift_core.critic.score_stage import reward_summary
from lift_core.critic.scoring import (
    RewardMapping,
    assemble_rows,
    dimension_rewards,
    label_probabilities,
    lift_critic_output,
    rows_to_scores_table,
)
from lift_core.schemas import SCORES_SCHEMA, caption_id

MAPPING = RewardMapping.from_config(CriticConfig(), ScoreConfig())


def test_label_probabilities_renormalise_over_the_three_label_tokens():
    logits = torch.tensor([[5.0, 1.0, 2.0, 3.0, -1.0], [0.0, 0.0, 9.0, 0.0, 0.0]])
    probs = label_probabilities(logits, [3, 1, 4])  # Good, Normal, Bad token ids
    expected = torch.softmax(torch.tensor([[3.0, 1.0, -1.0], [0.0, 0.0, 0.0]]), dim=-1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_expected_reward_and_argmax_label():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    labels, rewards = dimension_rewards(probs, MAPPING)
    assert labels == ["Good", "Bad", "Normal"]
    # default values: Good 1.0, Normal 0.5, Bad 0.0
    np.testing.assert_allclose(rewards, [0.7 + 0.1, 0.1 + 0.15, 0.2 + 0.25])


def test_label_values_are_configurable_and_validated():
    custom = RewardMapping({"Good": 2.0, "Normal": 1.0, "Bad": -1.0}, {"Good": 0.9, "Normal": 0.2, "Bad": 0.05})
    _, rewards = dimension_rewards(np.array([[0.5, 0.25, 0.25]]), custom)
    assert rewards[0] == pytest.approx(1.0 + 0.25 - 0.25)
    with pytest.raises(ValueError, match="label_values"):
        RewardMapping({"Good": 1.0, "Bad": 0.0}, MAPPING.lift_values)
    with pytest.raises(ValueError, match="lift_values"):
        RewardMapping(MAPPING.label_values, {"Good": 1.0, "Normal": 0.5, "Bad": 0.0, "Meh": 0.1})


def test_rows_carry_both_rewards_per_the_contract():
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]]])  # semantic, fidelity, motion
    ts = datetime(2025, 1, 1, tzinfo=timezone.utc)
    meta = [{"video_id": "v1", "uri": "/x/v1.mp4", "caption": "a cat", "source": "generated"}]
    rows = assemble_rows(meta, probs, [["ok", "blurry", "jumps"]], MAPPING, "critic123", ts)
    r = rows[0]
    assert (r["label_semantic"], r["label_fidelity"], r["label_motion"]) == ("Good", "Bad", "Normal")
    assert r["p_good_semantic"] == pytest.approx(0.7) and r["p_bad_fidelity"] == pytest.approx(0.6)
    assert r["reward"] == pytest.approx(np.mean([0.8, 0.25, 0.45]))
    assert r["reward_lift"] == pytest.approx((0.9 + 0.05 + 0.2) / 3)  # LiFT: Good 0.9, Bad 0.05, Normal 0.2
    assert r["reason_fidelity"] == "blurry" and r["critic_id"] == "critic123"
    assert r["caption_id"] == caption_id("a cat")  # the key of the row is (video_id, caption_id, critic_id)
    table = rows_to_scores_table(rows)
    assert table.schema == SCORES_SCHEMA and table.num_rows == 1


def test_reward_summary_per_source_and_dimension(tmp_path):
    ts = datetime(2025, 1, 1, tzinfo=timezone.utc)
    probs = np.array([[[1.0, 0.0, 0.0]] * 3, [[0.0, 0.0, 1.0]] * 3, [[0.0, 1.0, 0.0]] * 3])
    meta = [{"video_id": f"v{i}", "uri": f"u{i}", "caption": "c", "source": s}
            for i, s in enumerate(["generated", "generated", "hd-vila"])]
    uri = str(tmp_path / "scores.parquet")
    storage.write_table(uri, rows_to_scores_table(assemble_rows(meta, probs, None, MAPPING, "c", ts)))
    summary = reward_summary(uri)
    assert summary["n_scored"] == 3
    table = {(r["source"], r["dimension"]): r for r in summary["reward_summary"]}
    assert set(table) == {(s, d) for s in ("generated", "hd-vila") for d in
                          ("semantic", "fidelity", "motion", "overall", "lift")}
    gen = table[("generated", "motion")]
    assert gen["n"] == 2 and gen["mean"] == pytest.approx(0.5) and gen["std"] == pytest.approx(0.5)
    assert (gen["n_good"], gen["n_normal"], gen["n_bad"]) == (1, 0, 1)
    assert gen["p05"] == pytest.approx(0.05) and gen["p95"] == pytest.approx(0.95)
    assert table[("hd-vila", "lift")]["mean"] == pytest.approx(0.2)
    json.dumps(summary)  # a table artifact needs plain JSON


def test_lift_json_matches_lift_critic_output_format(fixtures_dir):
    """Entries keep LiFT's input keys in order and gain the three answers, as critic_output_13b.json."""
    entries = json.loads((fixtures_dir / "lift-demo/test.json").read_text())
    reference = json.loads((fixtures_dir / "lift-demo/critic_output_13b.json").read_text())
    root = str(fixtures_dir / "lift-demo")
    ts = datetime(2025, 1, 1, tzinfo=timezone.utc)
    probs = np.array([[[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.8, 0.1, 0.1]],
                      [[0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [0.2, 0.6, 0.2]]])
    meta = [{"video_id": storage.content_id(f"{root}/{e['video']}"), "uri": f"{root}/{e['video']}",
             "caption": e["caption"], "source": "lift-inference"} for e in entries]
    reasons = [["Basically correct.", "Eyes missing.", "No obvious problems."], ["No spacesuit.", "Limbs.", "Slight."]]
    rows = assemble_rows(meta, probs, reasons, MAPPING, "c", ts)
    keys = {i: (m["video_id"], caption_id(m["caption"])) for i, m in enumerate(meta)}
    items, missing = lift_critic_output(rows[::-1], entries, keys)
    assert missing == []
    assert [list(i) for i in items] == [list(r) for r in reference]
    assert [i["video_id"] for i in items] == ["demo_0.mp4", "demo_1"]  # LiFT's own ids are kept
    assert items[0]["semantic consistency"] == "Good. Basically correct."
    assert items[1]["motion issues"] == "Normal. Slight."
    # An entry whose video has no score is reported, not dropped silently.
    items, missing = lift_critic_output(rows[:1], entries, keys)
    assert len(items) == 1 and missing == ["1.mp4 (entry 1)"]


def test_lift_json_entries_get_their_own_captions_scores_never_another_entrys(fixtures_dir):
    """Entries of one video: each takes the row of its own caption; an entry without a key (rejected at
    ingest) or whose (video, caption) was not scored is missing, even when its video was scored."""
    root = str(fixtures_dir / "lift-demo")
    vid = storage.content_id(f"{root}/0.mp4")
    entries = [{"video": "0.mp4", "caption": "a crane"}, {"video": "0.mp4", "caption": "a panda"},
               {"video": "0.mp4", "caption": ""}, {"video": "0.mp4", "caption": "a dog"}]
    probs = np.array([[[0.9, 0.05, 0.05]] * 3, [[0.05, 0.05, 0.9]] * 3])
    meta = [{"video_id": vid, "uri": f"{root}/0.mp4", "caption": c, "source": "lift-inference"}
            for c in ("a crane", "a panda")]
    rows = assemble_rows(meta, probs, None, MAPPING, "c", datetime(2025, 1, 1, tzinfo=timezone.utc))
    keys = {0: (vid, caption_id("a crane")), 1: (vid, caption_id("a panda")), 3: (vid, caption_id("a dog"))}
    items, missing = lift_critic_output(rows, entries, keys)
    assert [(i["caption"], i["semantic consistency"]) for i in items] == [("a crane", "Good."), ("a panda", "Bad.")]
    assert missing == ["0.mp4 (entry 2)", "0.mp4 (entry 3)"]
