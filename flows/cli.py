"""The ``lift`` command: every stage as a subcommand, runnable without Prefect.

Each area registers its subcommands from its own module (``flows/cli_*.py``), so the command
surface grows with the stages. Errors exit non-zero with a one-line reason.
"""

from __future__ import annotations

import importlib
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


_register()


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


def main() -> None:
    from lift_core.config import ConfigError

    try:
        app(standalone_mode=False)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except (CliError, ConfigError, FileNotFoundError, ValueError, KeyError, OSError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        typer.echo(f"lift: error: {msg}", err=True)
        sys.exit(2)
    except Exception as err:  # click usage errors and the rest
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        typer.echo(f"lift: error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
