"""The run's results summary (``make demo``'s last words and the flow's ``lift-full-results`` artifact),
read back from stage folders whose outputs the real producers wrote (the ``finished_stages`` fixture:
``agreement_from_predictions`` for metrics.json, the evaluation's ``summarize`` and ``report_markdown``
for eval.json and report.md)."""

from __future__ import annotations

import pytest

from lift_core import storage
from lift_core.domain import DIMENSIONS
from lift_core.metrics.oracle import ATTRIBUTES
from lift_core.results import run_summary, summary_markdown, summary_text

@pytest.fixture
def run_root(tmp_path) -> str:
    return str(tmp_path / "run")


def test_summary_holds_agreement_vs_majority_base_vs_aligned_files_and_link(run_root, finished_stages):
    dirs = {**finished_stages(run_root), "decode": storage.stage_dir(run_root, "decode", "never-finished")}
    report_url = "http://127.0.0.1:4200/artifacts/artifact/r1"
    s = run_summary(dirs, ui_url="http://127.0.0.1:4200/runs/flow-run/abc", report_url=report_url,
                    report_artifact="evaluate-report")

    assert [r["dimension"] for r in s.agreement] == list(DIMENSIONS)
    for r in s.agreement:
        assert (r["n"], r["accuracy"], r["majority_label"], r["majority_accuracy"]) == (4, 0.75, "Good", 0.5)
        assert r["gain"] == pytest.approx(0.25)

    ev = storage.read_json(storage.join(dirs["evaluate"], "eval.json"))
    by = {r["metric"]: r for r in s.comparison}
    reward = by["critic reward"]
    assert (reward["base"], reward["aligned"]) == (ev["base"]["reward"], ev["aligned"]["reward"])
    assert reward["win_rate"] == ev["win_rate"] and reward["win_rate_ci"] == tuple(ev["win_rate_ci"])
    assert reward["delta_ci"] == tuple(ev["reward_delta_ci"])
    oracle = by["oracle adherence"]
    assert (oracle["base"], oracle["aligned"]) == pytest.approx((0.5, 0.6))
    assert oracle["win_rate"] == ev["oracle"]["win_rate"] == 1.0 and oracle["win_rate_ci"] == (1.0, 1.0)
    assert {f"critic reward: {d}" for d in DIMENSIONS} <= set(by)
    assert sorted(a["attribute"] for a in s.oracle_attributes) == sorted(ATTRIBUTES)
    assert (s.n_prompts, s.n_pairs) == (4, 4) and s.notes == []

    paths = {f["what"]: f["path"] for f in s.files if f["what"] != "plot"}
    assert paths["report"] == storage.join(dirs["evaluate"], "report.md")
    plots = [f["path"] for f in s.files if f["what"] == "plot"]
    assert [p.rsplit("/", 1)[1] for p in plots] == ["dimensions.png", "reward_hist.png"]

    text, md = summary_text(s), summary_markdown(s)
    for rendered in (text, md):
        assert "Critic agreement" in rendered and "Base vs aligned" in rendered and "oracle adherence" in rendered
        assert paths["report"] in rendered
        assert "http://127.0.0.1:4200/runs/flow-run/abc" in rendered and report_url in rendered
    assert all(p in text for p in plots)  # the terminal can open them
    # The artifact links the report artifact, which embeds the plots; a worker's paths are named as code, not links.
    assert f"[the `evaluate-report` artifact]({report_url})" in md
    assert not any(p in md for p in plots)
    assert f"| plots (2 files) | `{plots[0].rsplit('/', 1)[0]}/` |" in md and f"| report | `{paths['report']}` |" in md
    assert "](/" not in md and "](file:" not in md
    assert "| semantic | 4 | 0.7500 | 0.5000 | +0.2500 |" in md
    assert "| critic reward |" in md and "[1.0000, 1.0000]" in md  # the oracle's win-rate interval
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("semantic"))
    assert line.split()[:5] == ["semantic", "4", "0.7500", "0.5000", "+0.2500"]


def test_summary_without_oracle_or_unfinished_stages_says_what_is_missing(run_root, finished_stages):
    s = run_summary([finished_stages(run_root, critic=False, oracle=False)["evaluate"]])
    assert s.agreement == [] and "oracle adherence" not in {r["metric"] for r in s.comparison}
    assert any("train_critic" in n for n in s.notes) and any("pixel-oracle" in n for n in s.notes)
    assert "no finished train_critic" in summary_text(s)
    assert "Report and plots" not in summary_markdown(s)  # no link the caller did not give

    empty = run_summary({})
    assert empty.comparison == [] and len(empty.notes) == 2 and "LiFT run: results" in summary_text(empty)


def test_eval_json_is_read_defensively(run_root):
    """Missing, partial or odd-typed figures are left out, never invented; extra keys are ignored."""
    out = storage.stage_dir(run_root, "evaluate", "odd")
    ev = {"base": {"reward": 0.4}, "aligned": {"reward": 0.5, "semantic": "n/a"}, "win_rate": None,
          "oracle": {"base": 0.3, "aligned": 0.2, "win_rate_ci": [0.1], "by_attribute": {"colour": {"base": 1}}},
          "future_key": {"x": 1}}
    storage.mark_success(storage.StageResult("evaluate", "odd", out, {}, {}, ev))
    s = run_summary([out])
    by = {r["metric"]: r for r in s.comparison}
    assert set(by) == {"critic reward", "oracle adherence"}
    assert by["critic reward"]["delta"] == pytest.approx(0.1) and by["critic reward"]["win_rate"] is None
    assert by["oracle adherence"]["delta"] == pytest.approx(-0.1) and by["oracle adherence"]["win_rate_ci"] is None
    assert s.oracle_attributes == [{"attribute": "colour", "base": 1.0, "aligned": None, "delta": None}]
    assert "–" in summary_text(s)
