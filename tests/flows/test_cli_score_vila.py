"""``lift score`` with LiFT's own critic format (a tiny VILA1.5 + LiFT-Critic LoRA) on LiFT's real demo
videos, and ``lift import-scores`` on LiFT's real critic outputs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lift_core import storage
from lift_core.domain import CRITIC_OUTPUT_KEYS, parse_label_answer


def run_cli(args: list[str]) -> dict:
    from flows.cli import app

    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_lift_score_with_a_vila_critic_writes_lift_json(ray_session, tmp_path, fixtures_dir, tiny_vila):
    out = tmp_path / "critic_output_tiny.json"
    summary = run_cli([
        "score", "--videos", str(fixtures_dir / "lift-demo/test.json"), "--critic-backbone", "vila",
        "--critic-base", tiny_vila["base"], "--critic", tiny_vila["adapter"], "--out", str(out),
        "--format", "lift-json", "--work-dir", str(tmp_path / "work"),
        "decode.height=42", "decode.width=42", "score.max_new_tokens=4",
    ])
    assert summary["scored"] == 2 and summary["json_entries"] == 2 and summary["json_missing"] == []
    got = json.loads(out.read_text())
    reference = json.loads((fixtures_dir / "lift-demo/critic_output_13b.json").read_text())
    assert [list(e) for e in got] == [list(e) for e in reference]  # LiFT's keys, in LiFT's order
    scores = {r["caption"]: r for r in storage.read_table(summary["scores"]).to_pylist()}
    for entry in got:
        row = scores[entry["caption"]]
        for dim, key in CRITIC_OUTPUT_KEYS.items():
            label, _ = parse_label_answer(entry[key])
            assert label == row[f"label_{dim}"]
    # The same critic from the config (critic.backbone, critic.model): the same critic id, a cache hit.
    again = run_cli([
        "score", "--videos", str(fixtures_dir / "lift-demo/test.json"), "--critic", tiny_vila["adapter"],
        "--out", str(tmp_path / "scores.parquet"), "--work-dir", str(tmp_path / "work"),
        "critic.backbone=vila", f"critic.model={tiny_vila['base']}", "decode.height=42", "decode.width=42",
        "score.rationale=true", "score.max_new_tokens=4",
    ])
    assert again["critic_id"] == summary["critic_id"] and again["stage_dir"] == summary["stage_dir"]


def test_import_scores_cli(tmp_path, fixtures_dir):
    out = tmp_path / "lift13b.parquet"
    summary = run_cli(["import-scores", str(fixtures_dir / "lift-demo/critic_output_13b.json"),
                       "--format", "critic-output", "--out", str(out)])
    assert summary["rows"] == 2 and summary["quarantined"] == 0 and summary["critic_id"].startswith("file-")
    rows = storage.read_table(str(out)).to_pylist()
    # Good/Bad/Good and Bad/Bad/Normal: (0.9 + 0.05 + 0.9) / 3 and (0.05 + 0.05 + 0.2) / 3
    assert sorted(round(r["reward_lift"], 4) for r in rows) == [0.1, 0.6167]
    assert storage.read_table(summary["manifest"]).num_rows == 2
