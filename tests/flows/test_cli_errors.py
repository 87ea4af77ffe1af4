"""The ``lift`` command's failures: one line naming the path and the cause, exit code 2; ``--verify``."""

from __future__ import annotations

import errno
import os

import pytest


@pytest.fixture
def failing_command():
    """``failing_command(exc)``: a ``lift boom`` subcommand that raises ``exc``, removed afterwards."""
    from flows import cli

    registered = []

    def install(exc: BaseException) -> None:
        @cli.app.command("boom")
        def boom() -> None:
            raise exc

        registered.append(cli.app.registered_commands[-1])

    yield install
    for command in registered:
        cli.app.registered_commands.remove(command)


def test_a_disk_full_deep_in_a_worker_is_one_line_with_the_path(lift_cli, failing_command):
    try:
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/demo/decode/abc/frames/part-1.parquet")
    except OSError as disk_full:
        try:
            raise RuntimeError("RayTaskError(UserCodeException): the map task failed") from disk_full
        except RuntimeError as wrapped:
            failing_command(wrapped)
    code, _, err = lift_cli("boom")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "/runs/demo/decode/abc/frames/part-1.parquet" in lines[0]
    assert "No space left on device" in lines[0] or "disk" in lines[0].lower()


def test_a_corrupt_checkpoint_is_a_one_line_error(lift_cli, failing_command):
    from lift_core.train import CorruptCheckpoint

    failing_command(CorruptCheckpoint("/runs/x/checkpoints/step-000004/optimizer.pt does not match its manifest"))
    code, _, err = lift_cli("boom")
    assert code == 2 and "step-000004/optimizer.pt" in err and "Traceback" not in err


def test_verify_turns_on_full_hash_checks(lift_cli, failing_command, monkeypatch):
    monkeypatch.delenv("LIFT_VERIFY_OUTPUTS", raising=False)
    failing_command(ValueError("stop here"))
    code, _, _ = lift_cli("--verify", "boom")
    assert code == 2 and os.environ.get("LIFT_VERIFY_OUTPUTS") == "1"


# --------------------------------------------------------------------------- usage errors, as typer shows them
def _plain(text: str) -> str:
    """The text without colours, Rich's panel borders and line wrapping: what a reader sees, on one line."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    text = re.sub(r"[\u2500-\u257f]", " ", text)  # box drawing
    return " ".join(text.split())


def test_a_wrong_flag_shows_the_usage_the_hint_and_the_close_matches(lift_cli):
    code, out, err = lift_cli("decode", "--output", "x")
    assert code == 2
    shown = _plain(err)
    assert "Usage: lift decode [OPTIONS]" in shown
    assert "Try 'lift decode --help' for help." in shown
    assert "No such option: --output" in shown and "(Possible options: --out)" in shown
    assert "lift: error" not in shown and "NoSuchOption" not in shown and "Traceback" not in shown


def test_a_missing_required_option_names_the_option(lift_cli):
    code, _, err = lift_cli("score", "--videos", "v.parquet", "--out", "scores.parquet")
    assert code == 2
    shown = _plain(err)
    assert "Usage: lift score [OPTIONS]" in shown and "Try 'lift score --help' for help." in shown
    assert "Missing option '--critic'." in shown
    assert "Missing parameter: critic" not in shown


def test_a_command_that_exits_with_a_code_keeps_it(lift_cli, failing_command):
    import typer

    failing_command(typer.Exit(3))  # as ``lift rescore`` signals a low reward
    code, _, _ = lift_cli("boom")
    assert code == 3


def test_an_abort_exits_130(lift_cli, failing_command):
    import typer

    failing_command(typer.Abort())
    code, _, err = lift_cli("boom")
    assert code == 130 and "Aborted!" in err
