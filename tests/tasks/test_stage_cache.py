"""Prefect's cache and the stage folders agree in real flow runs: a rerun that changes only how a stage
runs is a cache hit on the same folder; one that changes what it computes runs it into a new folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow

from lift_core.config import load_config
from tasks.stages import InlineStages, Stages

pytestmark = pytest.mark.integration


@flow(name="stage-cache-probe")
def prepare_data(cfg_dict: dict) -> tuple[dict, dict[str, str]]:
    run = Stages(cfg_dict)
    run.prepare_data()
    run.wait()
    return run.results, run.states


def _cfg(tmp_path, *extra: str):
    return load_config("configs/demo.yaml", [
        f"run_root={tmp_path / 'run'}", "data.synthetic.n=2", "data.synthetic.n_real=1", "data.synthetic.n_prompts=2",
        "decode.frames=2", "decode.height=16", "decode.width=16", *extra])


def _run(tmp_path, *extra: str) -> tuple[dict, dict[str, str]]:
    state = prepare_data(_cfg(tmp_path, *extra).model_dump(mode="json"), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def test_a_rerun_hits_the_cache_exactly_when_the_stage_folder_is_the_same(prefect_api, ray_session, tmp_path):
    first, states = _run(tmp_path)
    assert states == dict.fromkeys(("synth", "ingest", "decode"), "Completed")
    assert first["decode"]["counts"]["decoded"] == 3

    # decode.batch_size and decode.num_cpus change how decoding runs, not the frames.
    faster, states = _run(tmp_path, "decode.batch_size=1", "decode.num_cpus=0.5")
    assert states == dict.fromkeys(("synth", "ingest", "decode"), "Cached")
    assert faster == first

    # decode.frames changes the frames: a new folder, and Prefect runs the task again.
    more, states = _run(tmp_path, "decode.frames=3")
    assert states == {"synth": "Cached", "ingest": "Cached", "decode": "Completed"}
    assert more["decode"]["key"] != first["decode"]["key"]
    assert more["decode"]["out_uri"] == str(tmp_path / "run" / "decode" / more["decode"]["key"])


def test_the_cli_runs_the_stages_the_flow_runs(prefect_api, ray_session, tmp_path):
    """``InlineStages`` (the ``lift`` CLI) and the flow's tasks write and find the same stage folders."""
    inline = InlineStages(_cfg(tmp_path))
    inline.prepare_data()
    done = {label: Path(r["out_uri"], "_SUCCESS.json").stat().st_mtime_ns for label, r in inline.results.items()}

    results, states = _run(tmp_path)
    assert states == dict.fromkeys(("synth", "ingest", "decode"), "Completed")  # new to Prefect's cache...
    assert results == inline.results  # ...but each task found its stage done by the CLI
    assert {label: Path(r["out_uri"], "_SUCCESS.json").stat().st_mtime_ns for label, r in results.items()} == done


def test_a_cache_hit_whose_outputs_were_damaged_runs_the_stage_again(prefect_api, ray_session, tmp_path):
    """Issue 18: Prefect's cache never returns a stage whose outputs no longer match its _SUCCESS.json."""
    first, _ = _run(tmp_path)
    shard = next(Path(first["decode"]["outputs"]["frames"]).glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    again, states = _run(tmp_path)
    assert states == {"synth": "Cached", "ingest": "Cached", "decode": "Completed"}
    assert again["decode"]["key"] == first["decode"]["key"]
    assert again["decode"]["counts"]["decoded"] == 3
    import pyarrow.parquet as pq

    assert sum(pq.read_metadata(p).num_rows for p in Path(again["decode"]["outputs"]["frames"]).glob("*.parquet")) == 3
