"""What every CLI command shares: consoles, one-line errors, progress bars."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from fastdeblur._progress import progress_bar

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


class CLIError(Exception):
    """An error whose message is shown to the user as is (one line, exit code 1)."""


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr and return the ``typer.Exit`` to raise."""
    # the message is plain text: brackets in it (``fastdeblur[plot]``) are not markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, with its type when the message is empty."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures inside a command into one line on stderr and exit code 1.

    Expected failures are bad arguments, unreadable files and failed checks (``ValueError``,
    ``TypeError``, ``OSError``, ``RuntimeError``, :class:`CLIError`); a ``KeyboardInterrupt``
    exits with 130. Nothing is printed as a traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except (CLIError, ValueError, TypeError, OSError, RuntimeError, KeyError) as exc:
            raise fail(one_line(exc)) from None

    return wrapper


def progress() -> Progress:
    """A rich progress bar on stderr for work over many items or steps."""
    return progress_bar(err_console)


def setup_logging(verbose: bool = False) -> None:
    """Library log lines (backend fallbacks, ...) go to stderr, once each."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
