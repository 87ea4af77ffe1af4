"""``lift run``: config errors fail fast, with one line naming the key, before any Prefect server starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _lift(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_unknown_override_key_exits_2_naming_it():
    proc = _lift("run", "--config", "configs/demo.yaml", "critic.trian.max_steps=3")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("lift: error: invalid config") and "critic.trian" in line
    assert "temporary server" not in proc.stdout + proc.stderr  # it failed before Prefect started


def test_missing_config_file_exits_2():
    proc = _lift("run", "--config", "configs/nope.yaml")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("lift: error: cannot read config configs/nope.yaml")


def test_wrong_value_type_names_the_key():
    proc = _lift("run", "--config", "configs/demo.yaml", "prefect.retries=many")
    assert proc.returncode == 2 and "prefect.retries" in proc.stderr
