"""The ``lift`` command: every stage as a subcommand, runnable without Prefect.

Each area registers its subcommands from its own module (``flows/cli_*.py``), so the command
surface grows with the stages. Errors exit non-zero with a one-line reason.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="lift",
    help="LiFT pipeline: align text-to-video models with human feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_COMMAND_MODULES = ("flows.cli_data", "flows.cli_critic", "flows.cli_score", "flows.cli_t2v", "flows.cli_ops", "flows.cli_rescore")


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that area is not built yet
                continue
            raise
        module.register(app)


@app.callback()
def _options(verify: bool = typer.Option(
        False, "--verify", help="On a cache hit, check every output's sha256 against its stage's _SUCCESS.json "
                                "(sizes and row counts are always checked); a mismatch reruns the stage.")) -> None:
    if verify:
        os.environ["LIFT_VERIFY_OUTPUTS"] = "1"  # Ray workers and every stage inherit it


_register()


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


def main() -> None:
    from lift_core import storage
    from lift_core.config import ConfigError
    from lift_core.train import CorruptCheckpoint
    from lift_core.train.loop import TrainingFailed
    from lift_core.video.decode_stage import MissingFramesError

    expected = (CliError, ConfigError, FileNotFoundError, ValueError, KeyError, OSError, storage.ResourceError,
                storage.StageOutputError, MissingFramesError, CorruptCheckpoint, TrainingFailed)
    try:
        app(standalone_mode=False)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as err:
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        # Disk full, permission denied, missing credentials: one line with the path and the cause,
        # whichever Ray worker hit it.
        resource = storage.resource_error_in(err)
        if resource is not None or isinstance(err, expected):
            shown = resource if resource is not None else err
            msg = str(shown).splitlines()[0] if str(shown) else type(shown).__name__
            typer.echo(f"lift: error: {msg}", err=True)
            sys.exit(2)
        typer.echo(f"lift: error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
