"""The one I/O object of the CLI.

stdout carries data (tables, ids, JSON); stderr carries notices, warnings and progress. On a TTY
data is rendered as rich tables; piped, the same content is printed as plain tab-separated lines
with stable columns and no colour; with ``--json`` each object is one JSON document per line
(NDJSON), exactly as the API returned it. Tests build an ``Output`` around ``io.StringIO``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO, Any


def to_jsonable(obj: Any) -> Any:
    """Pydantic models -> dicts (API field names, extra fields kept); everything else as is."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_none=False)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    return obj


class Output:
    def __init__(
        self,
        *,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        json_mode: bool = False,
        quiet: bool = False,
        verbose: bool = False,
        progress: bool = True,
        is_tty: bool | None = None,
        color: bool | None = None,
    ) -> None:
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.json = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.err_is_tty = _isatty(self.stderr) if is_tty is None else is_tty
        if is_tty is None:
            is_tty = _isatty(self.stdout)
        self.is_tty = is_tty
        if color is None:
            color = is_tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        self.color = color
        # progress: animated on a TTY stderr, throttled plain lines otherwise; never with --json/--quiet
        self.progress_enabled = progress and not quiet and not json_mode
        self._console = None
        self._err_console = None

    # ---- data (stdout) -------------------------------------------------------------------------
    def emit(self, obj: Any) -> None:
        """One JSON document on one line (``--json`` data and NDJSON streams)."""
        self.stdout.write(json.dumps(to_jsonable(obj), separators=(",", ":"), default=str) + "\n")
        self.stdout.flush()

    def print(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def table(
        self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
    ) -> None:
        rows = [["" if c is None else str(c) for c in row] for row in rows]
        if self.is_tty:
            from rich.table import Table

            table = Table(title=title, show_edge=False, header_style="bold" if self.color else None)
            for i, col in enumerate(columns):
                # the first column is the identifier (id, file): never wrap it mid-word
                table.add_column(col, overflow="fold", no_wrap=(i == 0))
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
        else:
            self.print("\t".join(c.upper() for c in columns))
            for row in rows:
                self.print("\t".join(c.replace("\t", " ").replace("\n", " ") for c in row))

    def record(self, obj: Any, pairs: Iterable[tuple[str, Any]]) -> None:
        """One API object: as JSON with --json, else as ``key: value`` lines."""
        if self.json:
            self.emit(obj)
        else:
            self.kv(pairs)

    def kv(self, pairs: Iterable[tuple[str, Any]]) -> None:
        pairs = [(k, "" if v is None else str(v)) for k, v in pairs]
        width = max((len(k) for k, _ in pairs), default=0)
        for k, v in pairs:
            self.print(f"{k + ':':<{width + 1}} {v}")

    # ---- notices (stderr) ----------------------------------------------------------------------
    def notice(self, msg: str) -> None:
        if not self.quiet:
            self._err(msg)

    def warn(self, msg: str) -> None:
        self._err(f"warning: {msg}")

    def error(self, msg: str) -> None:
        self._err(f"error: {msg}")

    def debug(self, msg: str) -> None:
        if self.verbose:
            self._err(f"debug: {msg}")

    def _err(self, msg: str) -> None:
        self.stderr.write(msg + "\n")
        self.stderr.flush()

    # ---- rich consoles, built on first use ----------------------------------------------------
    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=self.stdout,
                force_terminal=self.is_tty,
                no_color=not self.color,
                highlight=False,
                soft_wrap=False,
            )
        return self._console

    @property
    def err_console(self):
        if self._err_console is None:
            from rich.console import Console

            self._err_console = Console(
                file=self.stderr, force_terminal=self.err_is_tty, no_color=not self.color, highlight=False
            )
        return self._err_console

    def progress(self, *, transfer: bool = True) -> Progress:
        """A progress display: rich bars on a TTY, a plain line at most every few seconds otherwise."""
        return Progress(self, transfer=transfer)


class Progress:
    """Context manager with ``add(description, total) -> task``, ``advance(task, n)``,
    ``update(task, completed=None, total=None, description=None)`` and ``done(task)``.

    Disabled (a no-op) when progress is off (--no-progress, --quiet, --json).
    """

    plain_interval = 3.0

    def __init__(self, out: Output, *, transfer: bool = True) -> None:
        self.out = out
        self.transfer = transfer
        self.enabled = out.progress_enabled
        self.rich = self.enabled and out.err_is_tty
        self._bar = None
        self._tasks: dict[int, dict[str, Any]] = {}
        self._next = 0
        self._last_plain = 0.0
        import threading

        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        if self.rich:
            from rich import progress as rp

            if self.transfer:
                columns = [
                    rp.TextColumn("{task.description}"),
                    rp.BarColumn(),
                    rp.DownloadColumn(),
                    rp.TransferSpeedColumn(),
                    rp.TimeRemainingColumn(),
                ]
            else:
                columns = [
                    rp.TextColumn("{task.description}"),
                    rp.BarColumn(),
                    rp.TaskProgressColumn(),
                    rp.TimeRemainingColumn(),
                ]
            self._bar = rp.Progress(*columns, console=self.out.err_console, transient=False)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def add(self, description: str, total: float | None = None) -> int:
        with self._lock:
            tid = self._next
            self._next += 1
            rid = self._bar.add_task(description, total=total) if self._bar is not None else None
            self._tasks[tid] = {
                "rid": rid,
                "desc": description,
                "total": total,
                "done": 0.0,
                "t0": time.monotonic(),
            }
            return tid

    def advance(self, task: int, amount: float) -> None:
        self.update(task, completed=self._tasks[task]["done"] + amount)

    def update(
        self,
        task: int,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        if not self.enabled:
            return
        with self._lock:
            t = self._tasks[task]
            if completed is not None:
                t["done"] = completed
            if total is not None:
                t["total"] = total
            if description is not None:
                t["desc"] = description
            if self._bar is not None:
                self._bar.update(t["rid"], completed=t["done"], total=t["total"], description=t["desc"])
                return
            now = time.monotonic()
            if now - self._last_plain < self.plain_interval:
                return
            self._last_plain = now
            self.out._err(self._plain_line(t))
            if t["total"] is not None and t["done"] >= t["total"]:
                t["printed_done"] = True

    def done(self, task: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            t = self._tasks[task]
            already_complete = t.get("printed_done", False)
            if t["total"] is not None:
                t["done"] = t["total"]
            if self._bar is not None:
                self._bar.update(t["rid"], completed=t["done"])
            elif not already_complete:
                self.out._err(self._plain_line(t))
            t["printed_done"] = True

    def _plain_line(self, t: dict[str, Any]) -> str:
        total = t["total"]
        done = t["done"]
        if total:
            pct = 100.0 * done / total
            if self.transfer:
                elapsed = max(time.monotonic() - t["t0"], 1e-6)
                return f"{t['desc']}: {pct:5.1f}% ({_human_bytes(done)} of {_human_bytes(total)}, {_human_bytes(done / elapsed)}/s)"
            return f"{t['desc']}: {pct:5.1f}%"
        return f"{t['desc']}: {_human_bytes(done) if self.transfer else done}"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def human_bytes(n: float | None) -> str:
    return "-" if n is None else _human_bytes(n)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False
