"""Progress and human output on stderr (stdout is kept for ``--json``)."""
from __future__ import annotations

import contextlib
import sys


def console():
    from rich.console import Console

    # In CI logs (no terminal) rich would wrap tables at 80 columns: give them room.
    width = None if sys.stderr.isatty() else 160
    return Console(stderr=True, highlight=False, width=width)


class Progress:
    """``with progress.task("calibrating", total=256) as advance: advance(1)``.

    Draws a bar on a terminal; elsewhere (CI logs) prints one line per task."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None):
        if not self.enabled:
            yield lambda n=1: None
            return
        if not sys.stderr.isatty():
            print(f"edgeq: {description}...", file=sys.stderr, flush=True)
            yield lambda n=1: None
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                   SpinnerColumn, TextColumn, TimeElapsedColumn)

        cols = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn()]
        with RichProgress(*cols, console=console(), transient=True) as p:
            tid = p.add_task(description, total=total)
            yield lambda n=1: p.advance(tid, n)


QUIET = Progress(enabled=False)
