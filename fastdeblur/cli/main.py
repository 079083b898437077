"""The ``fastdeblur`` command: one Typer app, each command group registered from its module."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from fastdeblur._version import __version__
from fastdeblur.cli._common import err_console, one_line, setup_logging

app = typer.Typer(
    name="fastdeblur",
    help="Estimate how an image is blurred and remove the blur.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Command groups; each module exposes ``register(app)``. A group whose module is absent is
# simply not offered.
COMMAND_MODULES = (
    "fastdeblur.cli.synthesis",
    "fastdeblur.cli.deblur",
    "fastdeblur.cli.classify",
    "fastdeblur.cli.train",
    "fastdeblur.cli.robustness",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"fastdeblur {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library decides."),
) -> None:
    """Estimate how an image is blurred and remove the blur."""
    setup_logging(verbose)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    """Console entry point: any failure that escapes a command is one line, never a traceback
    (``FASTDEBLUR_DEBUG=1`` shows it)."""
    try:
        app()
    except Exception as exc:  # the last line of defence; commands report their own errors
        if os.environ.get("FASTDEBLUR_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {one_line(exc)}")
        sys.exit(2)


if __name__ == "__main__":
    main()
