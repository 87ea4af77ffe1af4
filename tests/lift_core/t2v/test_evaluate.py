"""Evaluate stage: base and aligned generate the held-out prompts with the same seeds, the critic scores
both, and eval.json / eval.parquet / report.md + plots come out."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch

from lift_core import storage
from lift_core.config import DIMENSIONS
from lift_core.t2v.align import TRAIN_LOG_SCHEMA
from lift_core.metrics.oracle import ATTRIBUTES
from lift_core.t2v.evaluate import EVAL_SCHEMA, grid_pairs, run_evaluate, summarize, win_rate

CRITIC = ["critic.pretrain=null", "critic.build_tiny.hidden_size=64", "critic.build_tiny.intermediate_size=128",
          "critic.build_tiny.vision_embed_dim=32"]


def test_win_rate_and_summary():
    assert win_rate([0.9, 0.1, 0.5], [0.5, 0.5, 0.5]) == pytest.approx((1 + 0 + 0.5) / 3)
    with pytest.raises(ValueError):
        win_rate([0.1], [0.1, 0.2])

    def row(tag, pid, reward, flicker, oracle=None):
        return {"tag": tag, "prompt_id": pid, "index": 0, "reward": reward, "flicker": flicker,
                **{f"reward_{d}": reward for d in DIMENSIONS}, "oracle": oracle,
                **{f"oracle_{a}": oracle for a in ATTRIBUTES}}

    rows = [row("base", "a", 0.2, 0.9), row("aligned", "a", 0.6, 0.95), row("base", "b", 0.5, 0.8),
            row("aligned", "b", 0.4, 0.85), row("aligned", "c", 1.0, 1.0)]  # "c" has no base twin: not a pair
    s = summarize(rows)
    assert s["n_prompts"] == s["n_pairs"] == 2
    assert s["base"] == pytest.approx({"reward": 0.35, "semantic": 0.35, "fidelity": 0.35, "motion": 0.35, "flicker": 0.85})
    assert s["aligned"]["reward"] == pytest.approx(0.5) and s["win_rate"] == 0.5
    assert s["reward_delta"] == pytest.approx(0.15)
    lo, hi = s["win_rate_ci"]
    assert 0 <= lo <= s["win_rate"] <= hi <= 1 and s["reward_delta_ci"][0] <= 0.15 <= s["reward_delta_ci"][1]
    assert "oracle" not in s  # captions outside the synthetic world: the oracle says nothing
    assert s["flicker_change"] == pytest.approx((0.9 - 0.85) / 0.85)
    with pytest.raises(ValueError, match="both"):
        summarize([row("base", "a", 0.2, 0.9)])


def test_oracle_summary_pools_pairs_with_cluster_bootstrap_intervals():
    """Aligned adheres better on 20 of 24 prompts x 2 seeds: the oracle win rate's interval is above 0.5."""
    rows = []
    for p in range(24):
        better = p >= 4
        for seed in range(2):
            for tag, value in (("base", 0.5), ("aligned", 0.75 if better else 0.25)):
                rows.append({"tag": tag, "prompt_id": f"p{p}", "index": seed, "reward": 0.5, "flicker": 0.9,
                             **{f"reward_{d}": 0.5 for d in DIMENSIONS}, "oracle": value,
                             **{f"oracle_{a}": value for a in ATTRIBUTES}})
    oracle = summarize(rows, seed=1)["oracle"]
    assert oracle["base"] == 0.5 and oracle["aligned"] == pytest.approx((20 * 0.75 + 4 * 0.25) / 24)
    assert oracle["win_rate"] == pytest.approx(20 / 24)
    assert 0.5 < oracle["win_rate_ci"][0] < oracle["win_rate"] < oracle["win_rate_ci"][1] <= 1
    assert oracle["delta_ci"][0] > 0 and set(oracle["by_attribute"]) == set(ATTRIBUTES)
    assert summarize(rows, seed=1)["oracle"] == oracle  # the bootstrap is seeded


def _critic_adapter(cfg, out: str) -> str:
    """An untrained (random, non-zero) LoRA on the tiny critic, saved as the critic trainer saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from lift_core.critic.builder import ensure_critic_base

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(ensure_critic_base(cfg))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(out)
    return out


def _t2v_lora(cfg, tiny_t2v, out: str) -> str:
    """A non-zero LoRA on the tiny transformer, in the diffusers format the align stage writes."""
    from peft import LoraConfig

    from lift_core.t2v.spec import get_spec

    spec = get_spec(cfg.t2v.family)
    pipe = spec.load_pipeline(tiny_t2v)
    torch.manual_seed(1)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                            target_modules=list(cfg.align.lora.target_modules)))
    spec.save_lora(out, pipe.transformer)
    return out


@pytest.mark.slow
def test_frame_grid_shows_random_pairs_then_the_largest_rises_and_falls_in_adherence():
    """Ten pairs whose aligned-minus-base adherence is known: after the random rows come the two largest
    rises and the two largest falls, labelled with their change, and no pair twice."""
    change = {f"p{i}": d for i, d in enumerate([0.5, -0.75, 0.0, 0.25, -0.25, 0.0, 1.0, 0.0, -0.5, 0.0])}
    rows = [{"tag": tag, "prompt_id": p, "index": 0, "oracle": 0.5 + (d if tag == "aligned" else 0.0) / 2}
            for p, d in change.items() for tag in ("base", "aligned")]
    shown = grid_pairs(rows, n_random=2, n_changed=2, seed=3)
    assert [why for _, why in shown][:2] == ["random", "random"]
    assert grid_pairs(rows, n_random=2, n_changed=2, seed=3) == shown  # seeded: a rerun shows the same rows
    assert len({pair for pair, _ in shown}) == len(shown)
    random_ids = {pair[0] for pair, _ in shown[:2]}
    rises = [p for p in ("p6", "p0", "p3") if p not in random_ids][:2]
    falls = [p for p in ("p1", "p8", "p4") if p not in random_ids][:2]
    assert [pair[0] for pair, _ in shown[2:]] == rises + falls
    assert all(why.startswith("rose most (+") for _, why in shown[2:4])
    assert all(why.startswith("fell most (-") for _, why in shown[4:])
    # Captions outside the synthetic world (no oracle reading): random pairs only.
    blind = [{**r, "oracle": None} for r in rows]
    assert [why for _, why in grid_pairs(blind, n_random=3, seed=0)] == ["random"] * 3


def test_evaluate_base_vs_aligned(ray_session, make_t2v_cfg, t2v_root, tiny_t2v, prompts_uri):
    cfg = make_t2v_cfg(t2v_root, *CRITIC)
    critic = _critic_adapter(cfg, str(t2v_root / "critic-adapter"))
    lora = _t2v_lora(cfg, tiny_t2v, str(t2v_root / "eval-lora"))
    train_log = str(t2v_root / "eval-train-log.parquet")
    storage.write_table(train_log, pa.Table.from_pylist(
        [{"step": s, "loss": 1.0 / s, "loss_unweighted": 2.0 / s, "mean_weight": 0.5, "lr": 1e-3, "grad_norm": 1.0,
          "samples_seen": 2 * s, "world_size": 1, "step_time_s": 0.01} for s in range(1, 21)], schema=TRAIN_LOG_SCHEMA))

    res = run_evaluate(cfg, prompts_uri, critic, {"lora": lora, "train_log": train_log})
    summary = json.loads(storage.read_text(res.outputs["eval_json"]))
    assert summary == res.metrics
    assert set(summary) >= {"base", "aligned", "win_rate", "win_rate_ci", "n_prompts", "oracle"}
    assert 0 <= summary["oracle"]["base"] <= 1 and len(summary["oracle"]["win_rate_ci"]) == 2
    for side in ("base", "aligned"):
        assert set(summary[side]) == {"reward", "semantic", "fidelity", "motion", "flicker"}
        assert 0 <= summary[side]["reward"] <= 1 and 0 < summary[side]["flicker"] <= 1
    assert summary["n_prompts"] == 2 and 0 <= summary["win_rate"] <= 1

    table = storage.read_table(res.outputs["eval_parquet"])
    assert table.schema.equals(EVAL_SCHEMA)
    rows = table.to_pylist()
    assert sorted((r["tag"], r["prompt_id"]) for r in rows) == [
        ("aligned", "p03"), ("aligned", "p04"), ("base", "p03"), ("base", "p04")]
    by = {(r["tag"], r["prompt_id"]): r for r in rows}
    for pid in ("p03", "p04"):
        base, aligned = by[("base", pid)], by[("aligned", pid)]
        assert base["seed"] == aligned["seed"]  # same seeds on both sides
        assert base["video_id"] != aligned["video_id"]  # the LoRA changed the video
        assert base["critic_id"] == aligned["critic_id"]

    report = storage.read_text(res.outputs["report_md"])
    for name in ("frames.png", "reward_hist.png", "dimensions.png", "loss_curve.png"):
        assert f"plots/{name}" in report
        assert storage.read_bytes(storage.join(res.outputs["plots"], name))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "win rate" in report and "Pixel oracle" in report
    assert all(r["oracle"] is not None for r in rows)  # the test prompts are of the synthetic grammar
    assert run_evaluate(cfg, prompts_uri, critic, {"lora": lora, "train_log": train_log}) == res  # no-op rerun

    with pytest.raises(ValueError, match="exactly one"):
        run_evaluate(cfg, prompts_uri, critic, {"train_log": train_log})


def test_publish_generations_fills_a_watched_folder_that_rescoring_reads(tmp_path):
    """The demo's evaluation publishes the aligned videos where rescore-generations/scheduled looks."""
    import pyarrow as pa

    from lift_core.rescore.discovery import CAPTIONS_FILE
    from lift_core.t2v.evaluate import publish_generations

    rows = []
    for i, (tag, caption) in enumerate([("aligned", "one red circle moving left"), ("base", "one red circle moving left"),
                                        ("aligned", "two blue squares moving up")]):
        uri = tmp_path / "gen" / f"{tag}_{i}.mp4"
        uri.parent.mkdir(exist_ok=True)
        uri.write_bytes(f"video {i}".encode())
        rows.append({"video_id": f"v{i}", "uri": str(uri), "caption": caption, "tag": tag})
    folder = tmp_path / "incoming"
    assert publish_generations(pa.Table.from_pylist(rows), str(folder)) == 2
    captions = json.loads((folder / CAPTIONS_FILE).read_text())
    assert captions == {"aligned_v0.mp4": "one red circle moving left", "aligned_v2.mp4": "two blue squares moving up"}
    assert (folder / "aligned_v2.mp4").read_bytes() == b"video 2"
    (folder / CAPTIONS_FILE).write_text(json.dumps({**captions, "mine.mp4": "a user's own caption"}))
    assert publish_generations(pa.Table.from_pylist(rows), str(folder)) == 2  # a rerun keeps what others put there
    assert json.loads((folder / CAPTIONS_FILE).read_text())["mine.mp4"] == "a user's own caption"
