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

_COMMAND_MODULES = ("flows.cli_data", "flows.cli_critic", "flows.cli_score", "flows.cli_t2v", "flows.cli_ops", "flows.cli_rescore",
                    "flows.cli_models")


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


def _click_exceptions() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(usage errors, aborts) as typer raises them, whichever copy of Click it uses.

    typer 0.29 carries its own Click (``typer._click``); older typers raise ``click``'s classes.
    """
    shown: list[type[BaseException]] = []
    aborts: list[type[BaseException]] = [typer.Abort]
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        shown.append(module.ClickException)
        if isinstance(getattr(module, "Abort", None), type):
            aborts.append(module.Abort)
    return tuple(shown), tuple(aborts)


def _show_usage_error(err: BaseException) -> None:
    """Print a usage error as typer itself does (its Rich panel when Rich is on), else as Click does."""
    try:
        from typer import core, rich_utils

        if core.HAS_RICH and app.rich_markup_mode is not None:
            rich_utils.rich_format_error(err)
            return
    except (ImportError, AttributeError):
        pass
    err.show()


def main() -> None:
    from lift_core import storage
    from lift_core.config import ConfigError
    from lift_core.train import CorruptCheckpoint
    from lift_core.train.loop import TrainingFailed
    from lift_core.video.decode_stage import MissingFramesError

    expected = (CliError, ConfigError, FileNotFoundError, ValueError, KeyError, OSError, storage.ResourceError,
                storage.StageOutputError, MissingFramesError, CorruptCheckpoint, TrainingFailed)
    usage_errors, aborts = _click_exceptions()
    try:
        # Outside standalone mode, typer returns the code of a ``typer.Exit`` (and 130 for Ctrl-C)
        # instead of exiting: commands themselves return None.
        code = app(prog_name="lift", standalone_mode=False)
    except typer.Exit as exit_:  # older typers raise it
        sys.exit(exit_.exit_code)
    except usage_errors as err:  # a wrong flag, a missing option: usage, hint and error, exit 2
        _show_usage_error(err)
        sys.exit(getattr(err, "exit_code", 2))
    except aborts:
        typer.echo("Aborted!", err=True)
        sys.exit(130)
    except Exception as err:
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
    if isinstance(code, int) and not isinstance(code, bool):
        sys.exit(code)


if __name__ == "__main__":
    main()
