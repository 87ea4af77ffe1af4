"""LiFT's JSON rewards as score rows, checked against LiFT's ``process_reward_score.py`` on its real outputs."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest

from lift_core.config import DIMENSIONS, LABELS, config_from_dict
from lift_core.critic.import_scores import file_critic_id, import_score_rows, import_scores

LIFT_KEYS = {"semantic": "semantic consistency", "fidelity": "fidelity issues", "motion": "motion issues"}


def lift_process_reward_score(entry: dict) -> float:
    """LiFT's CogVideo/process_reward_score.py, from its rules: "Normal" anywhere, else "Bad" anywhere,
    else Good; Good 0.9, Normal 0.2, Bad 0.05; the mean over the three answers (before its rounding)."""
    def get_score(text: str) -> float:
        return 0.2 if "Normal" in text else 0.05 if "Bad" in text else 0.9

    return sum(get_score(entry[k]) for k in ("semantic consistency", "fidelity issues", "motion issues")) / 3


@pytest.mark.parametrize("name", ["critic_output_13b.json", "critic_output_40b.json"])
def test_critic_output_rows_reproduce_lifts_reward(fixtures_dir, name):
    src = fixtures_dir / "lift-demo" / name
    entries = json.loads(src.read_text())
    rows, manifest, quarantine = import_score_rows("critic-output", str(src))
    assert quarantine == [] and len(rows) == len(entries) == len(manifest) == 2
    cid = "file-" + hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    assert file_critic_id(str(src)) == cid
    for row, entry in zip(rows, entries):
        video = (fixtures_dir / "lift-demo" / entry["video"]).read_bytes()
        assert row["video_id"] == hashlib.sha256(video).hexdigest()[:16] and row["critic_id"] == cid
        assert row["caption"] == entry["caption"] and row["source"] == "generated"
        want = lift_process_reward_score(entry)
        assert row["reward_lift"] == pytest.approx(want, abs=1e-12)
        assert round(row["reward_lift"], 2) == round(want, 2)  # LiFT's file keeps two decimals
        for d in DIMENSIONS:
            label, reason = entry[LIFT_KEYS[d]].split(". ", 1)
            assert row[f"label_{d}"] == label and row[f"reason_{d}"] == reason.strip()
            probs = [row[f"p_{label_.lower()}_{d}"] for label_ in LABELS]
            assert probs == [1.0 if label_ == label else 0.0 for label_ in LABELS]
            assert row[f"reward_{d}"] == {"Good": 1.0, "Normal": 0.5, "Bad": 0.0}[label]  # critic.label_values
        assert row["reward"] == pytest.approx(sum(row[f"reward_{d}"] for d in DIMENSIONS) / 3)


def test_import_writes_scores_manifest_and_quarantine(fixtures_dir, tmp_path):
    from lift_core import storage
    from lift_core.schemas import SCORES_SCHEMA

    video = fixtures_dir / "lift-demo" / "0.mp4"
    src = tmp_path / "alignment.json"
    src.write_text(json.dumps([
        {"video": str(video), "caption": "a crane in a wetland", "score": 0.65},
        {"video": "missing.mp4", "caption": "gone", "score": 0.3},
        {"video": str(video), "caption": "no score", "score": "reward_score"},  # LiFT's template text
    ]))
    out = tmp_path / "imported" / "scores.parquet"
    summary = import_scores("alignment", str(src), str(out))
    assert summary["rows"] == 1 and summary["quarantined"] == 2
    scores = storage.read_table(str(out))
    assert scores.schema.equals(SCORES_SCHEMA)
    row = scores.to_pylist()[0]
    assert row["reward"] == row["reward_lift"] == 0.65 and row["label_semantic"] is None
    assert storage.read_table(summary["manifest"]).to_pylist()[0]["uri"] == str(video)
    errors = [r["error"] for r in storage.read_table(summary["quarantine"]).to_pylist()]
    assert any("not readable" in e for e in errors) and any("not a number" in e for e in errors)
    with pytest.raises(ValueError, match="unknown --format"):
        import_scores("lift-hra", str(src), str(out))


def test_align_reward_source_file(fixtures_dir, tmp_path):
    """``align.reward_source: file``: the file's score is the reward where it has the (video, caption)."""
    import numpy as np

    from lift_core import storage
    from lift_core.config import ConfigError
    from lift_core.critic.scoring import RewardMapping, assemble_rows, rows_to_scores_table
    from lift_core.schemas import MANIFEST_SCHEMA, rows_to_table
    from lift_core.t2v.align_stage import build_dataset, stage_out

    demo = fixtures_dir / "lift-demo"
    entries = json.loads((demo / "test.json").read_text())
    meta = [{"video_id": storage.content_id(str(demo / e["video"])), "uri": str(demo / e["video"]),
             "caption": e["caption"], "source": "generated"} for e in entries]
    cfg = config_from_dict({"run_root": str(tmp_path)})
    probs = np.full((2, 3, 3), 1 / 3)
    critic_rows = assemble_rows(meta, probs, None, RewardMapping.from_config(cfg.critic, cfg.score), "c" * 16,
                                datetime.now(timezone.utc))
    storage.write_table(str(tmp_path / "scores.parquet"), rows_to_scores_table(critic_rows))
    storage.write_table(str(tmp_path / "manifest.parquet"), rows_to_table(meta, MANIFEST_SCHEMA))
    reward_file = tmp_path / "alignment.json"
    reward_file.write_text(json.dumps([{"video": "0.mp4", "caption": entries[0]["caption"], "score": 0.8}]))
    (tmp_path / "0.mp4").write_bytes((demo / "0.mp4").read_bytes())

    inputs = (str(tmp_path / "scores.parquet"), [str(tmp_path / "manifest.parquet")])
    samples, _, _ = build_dataset(cfg, *inputs)
    assert [s["reward"] for s in samples] == pytest.approx([0.5, 0.5])
    file_cfg = config_from_dict({"run_root": str(tmp_path),
                                 "align": {"reward_source": "file", "reward_file": str(reward_file)}})
    samples, _, _ = build_dataset(file_cfg, *inputs)
    by_uri = {s["uri"]: s for s in samples}
    assert by_uri[meta[0]["uri"]]["reward"] == 0.8 and by_uri[meta[0]["uri"]]["critic_id"].startswith("file-")
    assert by_uri[meta[1]["uri"]]["reward"] == pytest.approx(0.5)  # not in the file: the critic's
    assert stage_out(file_cfg, *inputs)[0] != stage_out(cfg, *inputs)[0]
    with pytest.raises(ConfigError, match="reward_file"):
        config_from_dict({"align": {"reward_source": "file"}})
