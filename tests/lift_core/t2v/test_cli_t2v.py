"""``lift generate`` / ``lift align`` / ``lift evaluate``: a real (resumed) run and one-line failures.

(The CLI lives in flows/cli_t2v.py; its tests sit with the T2V tests that own the fixtures it needs.)
"""

from __future__ import annotations

import json
import sys

from flows import cli


def run_lift(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["lift", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def _overrides(cfg) -> list[str]:
    return [f"run_root={cfg.run_root}", "t2v.num_inference_steps=2", "generate.videos_per_prompt=2",
            "generate.num_cpus_per_actor=0.5"]


def test_lift_generate_finds_the_finished_stage(monkeypatch, capsys, generated, t2v_cfg, prompts_uri):
    code, out, err = run_lift(monkeypatch, capsys, "generate", "--config", "configs/demo.yaml", "--prompts", prompts_uri,
                              "--split", "train", *_overrides(t2v_cfg))
    assert code == 0, err
    result = json.loads(out[out.index("{"):])
    assert result["outputs"] == generated.outputs and result["counts"]["videos"] == 6


def test_one_line_failures(monkeypatch, capsys, t2v_cfg, tmp_path, prompts_uri):
    code, _, err = run_lift(monkeypatch, capsys, "align", "--config", "configs/demo.yaml",
                            "--scores", str(tmp_path / "none.parquet"), "--manifest", prompts_uri, *_overrides(t2v_cfg))
    assert code == 2 and err.strip().count("\n") == 0 and "--scores not found" in err
    code, _, err = run_lift(monkeypatch, capsys, "evaluate", "--config", "configs/demo.yaml", "--prompts", prompts_uri,
                            "--critic", str(tmp_path))
    assert code == 2 and "exactly one of --lora or --weights" in err
    code, _, err = run_lift(monkeypatch, capsys, "generate", "--config", "configs/demo.yaml", "--prompts", prompts_uri,
                            "t2v.num_frames=8", f"run_root={tmp_path}")
    assert code == 2 and "4k+1" in err
