"""The one rich progress bar used by the CLI and the training engine."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console | None = None, *, info_field: bool = False) -> Progress:
    """A progress bar: description, bar, done/total, elapsed and remaining time.

    Args:
        console: Where to draw it; default a stderr console (stdout stays for results).
        info_field: Also show the task's ``info`` field (e.g. the running loss); tasks must then be
            added with ``info=...``.
    """
    columns: list[ProgressColumn] = [TextColumn("[progress.description]{task.description}"),
                                     BarColumn(), MofNCompleteColumn()]
    if info_field:
        columns.append(TextColumn("{task.fields[info]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console or Console(stderr=True), transient=False)
