"""``lift synth``, ``lift ingest``, ``lift decode``: real runs, and one-line failures with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows import cli
from lift_core.video.frames import read_frames


def _json_tail(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_synth_ingest_decode(ray_session, lift_cli, tmp_path, fixtures_dir):
    code, out, err = lift_cli("synth", "--out", str(tmp_path / "s"), "--n", "6", "--seed", "3",
                              "--n-real", "2", "--n-prompts", "3")
    assert code == 0, err
    outputs = _json_tail(out)
    assert Path(outputs["hra_json"]).exists() and len(list((tmp_path / "s").rglob("*.mp4"))) == 8

    manifest = str(tmp_path / "m.parquet")
    code, out, err = lift_cli("ingest", "--format", "lift-hra", "--source", outputs["hra_json"],
                              "--videos-root", outputs["videos_root"], "--out", manifest)
    assert code == 0, err
    assert _json_tail(out)["counts"]["videos"] == 6 and pq.read_table(manifest).num_rows == 6

    code, out, err = lift_cli("ingest", "--format", "vbench-prompts", "--source",
                              str(fixtures_dir / "prompts/vbench_full_info_opt.json"), "--out", str(tmp_path / "p.parquet"))
    assert code == 0, err
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 944

    code, out, err = lift_cli("decode", "--manifest", manifest, "--out", str(tmp_path / "d"),
                              "--frames", "4", "--height", "28", "--width", "28")
    assert code == 0, err
    res = _json_tail(out)
    assert res["counts"]["decoded"] == 6 and res["counts"]["quarantined"] == 0
    assert {a.shape for a in read_frames(res["outputs"]["frames"]).values()} == {(4, 28, 28, 3)}


def test_ingest_every_fixture_format(lift_cli, tmp_path, fixtures_dir):
    (tmp_path / "vids").mkdir()
    for name in ("0.mp4", "1.mp4"):
        (tmp_path / "vids" / name).write_bytes((fixtures_dir / "lift-demo" / name).read_bytes())
    (tmp_path / "vids" / "captions.json").write_text(json.dumps({"0.mp4": "a crane", "1.mp4": "a panda"}))
    cases = [
        ("lift-inference", fixtures_dir / "lift-demo/test.json", 2, 0),
        ("critic-output", fixtures_dir / "lift-demo/critic_output_40b.json", 2, 0),
        ("lift-hra", fixtures_dir / "annotations/vidgen-data.json", 0, 711),  # videos not shipped
        ("video-dir", tmp_path / "vids", 2, 0),
    ]
    for fmt, source, videos, quarantined in cases:
        out = tmp_path / f"{fmt}.parquet"
        code, stdout, err = lift_cli("ingest", "--format", fmt, "--source", str(source), "--out", str(out))
        assert code == 0, (fmt, err)
        counts = _json_tail(stdout)["counts"]
        assert (counts["videos"], counts["quarantined"]) == (videos, quarantined), fmt
        assert pq.read_table(str(out).replace(".parquet", ".quarantine.parquet")).num_rows == quarantined


@pytest.mark.parametrize(
    "args, message",
    [
        (["ingest", "--format", "mp3", "--source", "x.json", "--out", "m.parquet"], "unknown --format 'mp3'"),
        (["ingest", "--format", "lift-hra", "--source", "{tmp}/nope.json", "--out", "{tmp}/m.parquet"], "source not found"),
        (["ingest", "--format", "alignment", "--source", "{fixtures}/annotations/alignment-data-template.json",
          "--out", "{tmp}/m.parquet"], "is not valid JSON"),
        (["decode", "--manifest", "{tmp}/nope.parquet", "--out", "{tmp}/d"], "manifest not found"),
        (["decode", "--manifest", "{tmp}/nope.parquet", "--out", "{tmp}/d", "--backend", "opencv"], "manifest not found"),
        (["synth", "--out", "{tmp}/s", "--n", "1", "--height", "63"], "--height: Input should be a multiple of 2"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(lift_cli, tmp_path, fixtures_dir, args, message):
    args = [a.format(tmp=tmp_path, fixtures=fixtures_dir) for a in args]
    code, _, err = lift_cli(*args)
    assert code == 2
    assert err.startswith("lift: error: ") and message in err and err.count("\n") == 1


def test_console_script_usage_error_exits_nonzero(tmp_path):
    # A real process: a bad option value exits non-zero with a short message naming the problem.
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "decode", "--manifest", "m", "--out", str(tmp_path),
                           "--frames", "0"], capture_output=True, text=True, cwd=Path(cli.__file__).resolve().parent.parent)
    assert proc.returncode in (1, 2) and proc.stdout == ""
    assert "--frames" in proc.stderr or "greater than or equal to 1" in proc.stderr
