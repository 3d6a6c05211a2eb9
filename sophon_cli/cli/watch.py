"""``--watch``: a live view of jobs (``job get``, ``job list``) that ends when every job shown is
terminal.

On a terminal the view is redrawn in place (rich ``Live``) and the last frame stays on screen.
Piped, the output is what the command prints without ``--watch``, once, when everything shown has
finished (no animation in a pipe); with ``--json`` each job is printed again whenever it changes
(NDJSON), so a script can follow the progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sophon_cli.cli import jobview as view

MIN_INTERVAL = 0.1


def check_interval(interval: float) -> float:
    from sophon_cli.client.errors import InputError

    if not interval >= MIN_INTERVAL:
        raise InputError(
            f"--interval must be at least {MIN_INTERVAL} seconds (got {interval})", hint="e.g. --interval 2"
        )
    return interval


class View:
    """How one watched list of jobs is drawn: a rich renderable per frame, and the piped form."""

    def __init__(self, frame: Callable[[list[Any]], Any], final: Callable[[list[Any]], None]) -> None:
        self.frame = frame
        self.final = final


def table_view(out: Any, sources: dict[str, str]) -> View:
    def frame(jobs: list[Any]) -> Any:
        from rich.text import Text

        if not jobs:
            return Text("no jobs")
        rows = [view.list_row(j, out.when, sources) for j in jobs]
        from sophon_cli.cli.output import status_style

        return out.rich_table(view.LIST_COLUMNS, rows, priority=view.LIST_PRIORITY, styles={1: status_style})

    def final(jobs: list[Any]) -> None:
        if not jobs:
            out.notice("no jobs")
            if out.is_tty:
                return
        view.list_table(out, jobs, sources)

    return View(frame, final)


def record_view(out: Any, sources: dict[str, str] | None = None) -> View:
    def frame(jobs: list[Any]) -> Any:
        from rich.text import Text

        from sophon_cli.cli.output import status_style
        from sophon_cli.client.text import terminal_safe

        text = Text()
        for job in jobs:
            pairs = view.job_rows(job, out.when, sources)
            width = max(len(k) for k, _ in pairs)
            for k, v in pairs:
                style = status_style(str(v)) if k == "status" and out.color else None
                text.append(f"{k + ':':<{width + 1}} ")
                text.append("" if v is None else terminal_safe(v), style=style or "")  # server text
                text.append("\n")
        text.rstrip()
        return text

    def final(jobs: list[Any]) -> None:
        for job in jobs:
            out.kv(view.job_rows(job, out.when, sources))

    return View(frame, final)


def _fingerprint(job: Any) -> tuple:
    progress = view.get(job, "progress")
    return (view.get(job, "status"), view.get(progress, "phase"), view.get(progress, "percent"))


def watch(
    out: Any,
    fetch: Callable[[], list[Any]],
    shown: View,
    *,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Any]:
    """Fetch and draw until every job fetched is terminal; return the last jobs."""
    if out.json:
        last: dict[str, tuple] = {}
        while True:
            jobs = fetch()
            for job in jobs:
                key = str(view.get(job, "id"))
                if last.get(key) != _fingerprint(job):
                    last[key] = _fingerprint(job)
                    out.emit(job)
            if all(view.is_terminal(j) for j in jobs):
                return jobs
            sleep(interval)
    if not out.is_tty:
        jobs = fetch()
        while not all(view.is_terminal(j) for j in jobs):
            sleep(interval)
            jobs = fetch()
        shown.final(jobs)
        return jobs
    from rich.live import Live

    from sophon_cli.cli.output import live_stopped

    jobs = fetch()
    try:
        with Live(shown.frame(jobs), console=out.console, auto_refresh=False, transient=False) as live:
            while not all(view.is_terminal(j) for j in jobs):
                sleep(interval)
                jobs = fetch()
                live.update(shown.frame(jobs), refresh=True)
    except BaseException as exc:
        live_stopped(type(exc))
        raise
    return jobs
