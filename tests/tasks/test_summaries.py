"""The stage summaries shown in the Prefect UI (declared with each stage), built from real stage outputs."""

from __future__ import annotations

import base64

from lift_core import storage
from lift_core.schemas import QUARANTINE_SCHEMA, quarantine_row, rows_to_table
from lift_core.stages import STAGES, critic_metrics_rows, embed_images, eval_rows, evaluate_report, md_table


def _png(path, colour):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.bar([0], [1], color=colour)
    fig.savefig(path)
    plt.close(fig)
    return path.read_bytes()


def test_evaluate_report_embeds_every_plot_and_keeps_missing_ones_visible(tmp_path):
    (tmp_path / "plots").mkdir()
    hist = _png(tmp_path / "plots" / "reward_hist.png", "red")
    (tmp_path / "report.md").write_text(
        "# LiFT evaluation\n\n![reward_hist](plots/reward_hist.png)\n\n![gone](plots/missing.png)\n"
        "![remote](https://example.org/x.png)\n")
    md = evaluate_report({"outputs": {"report_md": str(tmp_path / "report.md")}})
    inline = "![reward_hist](data:image/png;base64," + base64.b64encode(hist).decode() + ")"
    assert inline in md
    assert "![gone](plots/missing.png)" in md and "![remote](https://example.org/x.png)" in md
    assert embed_images("no images", str(tmp_path)) == "no images"


def test_eval_rows_pair_base_and_aligned_with_win_rates():
    ev = {"base": {"reward": 0.4, "semantic": 0.5, "flicker": 0.9}, "aligned": {"reward": 0.5, "semantic": 0.45,
          "flicker": 0.95}, "win_rate": 0.75, "win_rate_by_dimension": {"semantic": 0.25}}
    rows = eval_rows(ev)
    assert [r["metric"] for r in rows] == ["reward", "flicker", "semantic"]
    assert rows[0]["win_rate"] == 0.75 and abs(rows[0]["delta"] - 0.1) < 1e-9
    assert rows[2]["win_rate"] == 0.25 and rows[1]["win_rate"] is None


def test_critic_table_has_one_row_per_dimension_with_the_baseline():
    dim = {"n": 8, "accuracy": 0.625, "macro_f1": 0.26, "spearman": 0.08, "majority_label": "Normal",
           "majority_accuracy": 0.125, "majority_macro_f1": 0.07, "confusion": [[0]]}
    metrics = {"semantic": dim, "motion": dim, "fidelity": dim, "steps": 4, "val": {}}
    rows = critic_metrics_rows(metrics)
    assert [r["dimension"] for r in rows] == ["semantic", "fidelity", "motion"]
    assert rows[0]["accuracy"] == 0.625 and rows[0]["majority_accuracy"] == 0.125 and "confusion" not in rows[0]
    result = {"stage": "train_critic", "key": "k", "out_uri": "/run/train_critic/k", "counts": {}, "metrics": metrics,
              "outputs": {"adapter": "/run/train_critic/k/adapter", "metrics": "/run/train_critic/k/metrics.json"}}
    table, summary = STAGES["train_critic"].summary(result)  # the UI shows the table and the summary
    assert (table.name, table.table) == ("metrics", rows)
    assert summary.name == "summary" and "| semantic | 8 | 0.6250 |" in summary.markdown


def test_decode_summary_lists_quarantined_inputs_with_their_errors(tmp_path):
    q = str(tmp_path / "quarantine.parquet")
    storage.write_table(q, rows_to_table([quarantine_row("/data/bad.mp4", "decode", "moov atom not found", None),
                                          quarantine_row("/data/zero.mp4", "decode", "empty file", "ab12")],
                                         QUARANTINE_SCHEMA))
    result = {"stage": "decode", "key": "k1", "out_uri": str(tmp_path), "counts": {"videos": 5, "quarantined": 2},
              "outputs": {"frames": str(tmp_path / "frames"), "quarantine": q}}
    (summary,) = STAGES["decode"].summary(result)
    assert summary.name == "summary" and summary.table is None
    md = summary.markdown
    assert md.startswith("# Decode: frames and quarantined videos") and "## Quarantine: 2 input(s)" in md
    assert "| /data/bad.mp4 | – | moov atom not found |" in md and "| /data/zero.mp4 | ab12 | empty file |" in md
    assert "| quarantined | 2 |" in md


def test_md_table_escapes_cells():
    assert md_table([{"a": "x|y", "b": 0.5}]) == "| a | b |\n|---|---|\n| x\\|y | 0.5000 |"
    assert md_table([]) == "_none_"
