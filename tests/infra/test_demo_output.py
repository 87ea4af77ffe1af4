"""What `make demo` shows in its terminal (infra/local_stack.py), without a server: the API answers are
stubbed, the stage folders are real (``finished_stages``). The real server and run: test_local_stack.py."""

from __future__ import annotations

import io
import json

from lift_core.results import run_summary, summary_text


def test_demo_prints_the_results_summary_of_the_run_table(local_stack, finished_stages, tmp_path, monkeypatch):
    folders = finished_stages(tmp_path / "run")
    table = [{"task": label, "stage": label.replace("-", "_"), "folder": folder} for label, folder in folders.items()]
    table.append({"task": "decode", "stage": "decode", "folder": str(tmp_path / "run" / "decode" / "k")})
    asked = []

    def api(env, path, body=None, method=None, timeout=30.0):
        asked.append(body)
        return [{"key": "lift-full-run", "data": json.dumps(table)}]

    monkeypatch.setattr(local_stack, "api", api)
    link = "http://127.0.0.1:4200/runs/flow-run/abc"
    text = local_stack.results({}, "abc", link)
    assert asked[0]["artifacts"] == {"flow_run_id": {"any_": ["abc"]}, "key": {"any_": ["lift-full-run"]}}
    # The same function the flow's artifact is built with, on the same folders.
    assert text == summary_text(run_summary(list(folders.values()), ui_url=link))
    assert "Critic agreement" in text and "oracle adherence" in text and "report.md" in text and link in text


def test_demo_shows_task_states_and_progress_from_the_artifacts(local_stack, monkeypatch, capsys):
    runs = [{"id": "t1", "name": "decode", "state": {"name": "Running"}}]
    artifacts = [{"id": "a1", "data": 0.0, "description": "decode: 4 videos already decoded, 10 to go"}]
    monkeypatch.setattr(local_stack, "task_runs", lambda env, run_id: runs)
    monkeypatch.setattr(local_stack, "api", lambda env, path, body=None, **kw: artifacts)

    shown = local_stack.TaskProgress({}, "run-1", stream=io.StringIO())  # no terminal: plain lines
    shown.poll()
    artifacts[0].update(data=50.0, description="decode: decoded, 0 failed [5/10 videos]")
    shown.poll()
    shown.poll()  # nothing new: nothing printed
    runs[0]["state"]["name"] = "Completed"
    artifacts[0].update(data=100.0, description="decode: decoded, 0 failed [10/10 videos]")
    shown.poll()
    shown.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "  task decode                 Running"
    assert lines[1] == "  decode: 4 videos already decoded, 10 to go"
    assert lines[2].startswith("  decode: 5/10 videos (50%), ") and "ETA" in lines[2]
    assert lines[3] == "  task decode                 Completed"
    assert lines[4].startswith("  decode: 10/10 videos (100%), ") and "videos/s" in lines[4]
    assert len(lines) == 5
