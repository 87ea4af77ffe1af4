"""``lift generate`` / ``lift align`` / ``lift evaluate``: a real (resumed) run and one-line failures.

(The CLI lives in flows/cli_t2v.py; its tests sit with the T2V tests that own the fixtures it needs.)
"""

from __future__ import annotations

import json


def _overrides(cfg) -> list[str]:
    return [f"run_root={cfg.run_root}", "t2v.num_inference_steps=2", "generate.videos_per_prompt=2",
            "generate.num_cpus_per_actor=0.5", "t2v.pretrain=null",
            "t2v.build_tiny.num_layers=1", "t2v.build_tiny.attention_head_dim=8", "t2v.build_tiny.time_embed_dim=2",
            "t2v.build_tiny.vae_block_out_channels=[8, 8, 8, 8]", "t2v.build_tiny.latent_channels=4"]  # the session's model (conftest)


def test_lift_generate_finds_the_finished_stage(lift_cli, generated, t2v_cfg, prompts_uri):
    code, out, err = lift_cli("generate", "--config", "configs/demo.yaml", "--prompts", prompts_uri,
                              "--split", "train", *_overrides(t2v_cfg))
    assert code == 0, err
    result = json.loads(out[out.index("{"):])
    assert result["outputs"] == generated.outputs and result["counts"]["videos"] == 6


def test_one_line_failures(lift_cli, t2v_cfg, tmp_path, prompts_uri):
    code, _, err = lift_cli("align", "--config", "configs/demo.yaml",
                            "--scores", str(tmp_path / "none.parquet"), "--manifest", prompts_uri, *_overrides(t2v_cfg))
    assert code == 2 and err.strip().count("\n") == 0 and "--scores not found" in err
    code, _, err = lift_cli("evaluate", "--config", "configs/demo.yaml", "--prompts", prompts_uri,
                            "--critic", str(tmp_path))
    assert code == 2 and "exactly one of --lora or --weights" in err
    code, _, err = lift_cli("generate", "--config", "configs/demo.yaml", "--prompts", prompts_uri,
                            "t2v.num_frames=8", f"run_root={tmp_path}")
    assert code == 2 and "4k+1" in err
