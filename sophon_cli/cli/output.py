"""The one I/O object of the CLI.

stdout carries data (tables, ids, JSON); stderr carries notices, warnings and progress. On a TTY
data is rendered as rich tables (fitted to the width: low-priority columns dropped, long cells cut
with an ellipsis, never wrapped mid-word) and short records as two-space-separated fields; piped,
the same content is printed as plain tab-separated lines with stable columns and no colour; with
``--json`` each object is one JSON document per line (NDJSON), exactly as the API returned it,
restricted to ``--json FIELDS`` and filtered through ``--jq EXPR`` when those are given (a list
command's ``--jq`` gets the whole list as one array, as gh's does: :meth:`Output.emit_list`).

The rules every command shares live here: sizes in binary units (KiB, MiB, GiB), timestamps
relative on a terminal ("3 min ago") and RFC 3339 with a zone when piped and in JSON.
Tests build an ``Output`` around ``io.StringIO``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import IO, Any

from sophon_cli.units import human_bytes

#: what json.dumps(ensure_ascii=False) leaves unescaped that a terminal may act on
_TERMINAL_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class PipeClosed(Exception):
    """The reader of stdout closed the pipe; ``main`` stops quietly (exit 0)."""


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
        json_fields: Sequence[str] | None = None,
        jq: str | None = None,
        width: int | None = None,
    ) -> None:
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.json_fields = list(json_fields) if json_fields else None
        self.jq = jq
        self._jq_program = compile_jq(jq) if jq is not None else None
        self.json = json_mode or bool(self.json_fields) or jq is not None
        self.width = width
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
        self.progress_enabled = progress and not quiet and not self.json
        self._console = None
        self._err_console = None

    # ---- data (stdout) -------------------------------------------------------------------------
    def emit(self, obj: Any) -> None:
        """One JSON document on one line (``--json`` data and NDJSON streams), restricted to
        ``--json FIELDS`` and run through ``--jq EXPR`` (each result on its own line; strings raw)."""
        data = self._selected(obj)
        if self._jq_program is None:
            self._write_json(data)
            return
        self._write_jq(data)

    def emit_list(self, objs: Iterable[Any]) -> None:
        """A list command's objects (``job list``, ``webhooks list``, ``cache list``): NDJSON, one
        object per line as they come; with ``--jq`` the whole list is one JSON array that the
        expression runs on once, as gh does (``--jq '.[].id'``, ``--jq 'length'``)."""
        if self._jq_program is None:
            for obj in objs:
                self.emit(obj)
            return
        self._write_jq([self._selected(obj) for obj in objs])

    def _selected(self, obj: Any) -> Any:
        data = to_jsonable(obj)
        return select_fields(data, self.json_fields) if self.json_fields is not None else data

    def _write_jq(self, data: Any) -> None:
        """Each result on its own line, strings raw; on a terminal a raw string loses its control
        characters (server text: an escape sequence would act on the terminal), piped it is data."""
        from sophon_cli.client.text import strip_controls

        lines = [
            (strip_controls(value) if self.is_tty else value)
            if isinstance(value, str)
            else self._json_text(value)
            for value in run_jq(self._jq_program, data, self.jq or "")
        ]
        if lines:
            self._write("\n".join(lines) + "\n")

    def _write_json(self, data: Any) -> None:
        self._write(self._json_text(data) + "\n")

    def _json_text(self, data: Any) -> str:
        """Compact JSON. json.dumps escapes C0 controls but keeps C1 ones (the 8-bit CSI U+009B),
        DEL and bidi overrides as they are: on a terminal those are escaped too (the same data)."""
        text = json.dumps(data, separators=(",", ":"), default=str, ensure_ascii=False)
        return _TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if self.is_tty else text

    def _write(self, text: str) -> None:
        """Every line of data goes through here: a reader that went away (``| head -1``) ends the
        command as :class:`PipeClosed` (a quiet exit), not as an OSError."""
        try:
            self.stdout.write(text)
            self.stdout.flush()
        except BrokenPipeError:
            raise PipeClosed() from None

    def print(self, text: str = "") -> None:
        """One line of data; server-supplied text in it never moves the cursor or retitles the
        terminal (control characters and escape sequences are dropped, tabs and newlines kept)."""
        from sophon_cli.client.text import strip_controls

        self._write(strip_controls(text) + "\n")

    def fields(self, *values: Any) -> None:
        """One short record (``upl_1  clip.mp4``): tab-separated when piped, two spaces on a terminal."""
        cells = ["" if v is None else str(v).replace("\t", " ").replace("\n", " ") for v in values]
        self.print(("  " if self.is_tty else "\t").join(cells))

    def when(self, value: Any) -> str:
        """A timestamp by the one rule: relative on a terminal, RFC 3339 (UTC, ``Z``) when piped."""
        return relative_time(value) if self.is_tty else rfc3339(value)

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
        priority: Sequence[int] | None = None,
        styles: dict[int, Callable[[str], str | None]] | None = None,
    ) -> None:
        """A table. On a terminal it fits the width: the columns are dropped in the reverse order of
        ``priority`` (indexes, most important first; default: left to right) until the rest fits, and
        what still does not fit is cut with an ellipsis; ``styles`` colours cells (column index ->
        cell text -> rich style). Piped: a header and tab-separated rows with every column."""
        from sophon_cli.client.text import terminal_safe

        rows = [["" if c is None else terminal_safe(c) for c in row] for row in rows]
        if not self.is_tty:
            self.print("\t".join(c.upper() for c in columns))
            for row in rows:
                self.print("\t".join(c.replace("\t", " ").replace("\n", " ") for c in row))
            return
        self.console.print(self.rich_table(columns, rows, title=title, priority=priority, styles=styles))

    def rich_table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        title: str | None = None,
        priority: Sequence[int] | None = None,
        styles: dict[int, Callable[[str], str | None]] | None = None,
    ) -> Any:
        """The rich Table :meth:`table` prints on a terminal (also the frame of a live view)."""
        from rich.table import Table
        from rich.text import Text

        from sophon_cli.client.text import terminal_safe

        rows = [["" if c is None else terminal_safe(c) for c in row] for row in rows]
        priority = list(priority) if priority is not None else list(range(len(columns)))
        widths = fit_columns(
            [len(c) for c in columns], [[len(c) for c in row] for row in rows], self.console.width, priority
        )
        keep = list(widths)
        table = Table(title=title, show_edge=False, header_style="bold" if self.color else None)
        for i in keep:
            # the most important column (the id) is never cut; the long others end with an ellipsis
            table.add_column(columns[i], overflow="ellipsis", no_wrap=True, width=widths[i])
        for row in rows:
            cells = []
            for i in keep:
                style = (styles or {}).get(i)
                cell_style = style(row[i]) if style is not None and self.color else None
                cells.append(Text(row[i], style=cell_style or ""))
            table.add_row(*cells)
        return table

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
        """Every notice, warning and error line: a name in it (a local file's too: a shared folder
        can hold ``$'\\e]0;x\\a.mp4'``) never moves the cursor or retitles the terminal."""
        from sophon_cli.client.text import strip_controls

        self.stderr.write(strip_controls(msg) + "\n")
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
                width=self.width,
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
                    rp.DownloadColumn(binary_units=True),
                    _speed_column(rp),
                    rp.TimeRemainingColumn(),
                ]
            else:
                columns = [
                    rp.TextColumn("{task.description}"),
                    rp.BarColumn(),
                    rp.TaskProgressColumn(),
                    _eta_column(rp),
                ]
            self._bar = rp.Progress(*columns, console=self.out.err_console, transient=False)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None
            live_stopped(exc[0])

    def add(self, description: str, total: float | None = None) -> int:
        with self._lock:
            tid = self._next
            self._next += 1
            rid = None
            if self._bar is not None:
                rid = self._bar.add_task(_bar_text(description), total=total)
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
        eta: float | None = None,
    ) -> None:
        """``eta``: seconds left as the server estimates them (shown instead of the bar's own
        estimate, so a line carries one ETA)."""
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
            t["eta"] = eta
            if self._bar is not None:
                self._bar.update(
                    t["rid"], completed=t["done"], total=t["total"], description=_bar_text(t["desc"]), eta=eta
                )
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
                return f"{t['desc']}: {pct:5.1f}% ({human_bytes(done)} of {human_bytes(total)}, {human_bytes(done / elapsed)}/s)"
            eta = t.get("eta")
            return f"{t['desc']}: {pct:5.1f}%" + (
                f", eta {_clock(eta)}" if eta is not None and pct < 100 else ""
            )
        return f"{t['desc']}: {human_bytes(done) if self.transfer else done}"


# ---- --json FIELDS and --jq ----------------------------------------------------------------------


def _bar_text(text: str) -> str:
    """A progress bar's description (a file name, a job's server-reported phase) as text: rich
    would read ``[/x]`` in it as markup (and fail), and a terminal its escape sequences."""
    from rich.markup import escape

    from sophon_cli.client.text import terminal_safe

    return escape(terminal_safe(text))


def parse_json_fields(text: str) -> list[str]:
    """``id,status,output`` -> ["id", "status", "output"] (blanks dropped, repeats folded)."""
    return list(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))


def select_fields(data: Any, fields: Sequence[str]) -> Any:
    """The object restricted to ``fields`` (in that order); an unknown field is an InputError
    (exit 2) that lists the valid ones."""
    from sophon_cli.client.errors import InputError

    if not isinstance(data, dict):
        return data
    unknown = [f for f in fields if f not in data]
    if unknown:
        raise InputError(
            f"unknown JSON field {unknown[0]!r}",
            hint="valid fields: " + ", ".join(data),
        )
    return {f: data[f] for f in fields}


def compile_jq(expr: str) -> Any:
    """The compiled ``--jq`` program (the ``jq`` package: bindings to the jq C library); a syntax
    error is an InputError (exit 2), and so is an empty expression (the jq library runs "" as
    ``.``: ``--jq ''`` printed what ``--json`` does)."""
    from sophon_cli.client.errors import InputError

    if not expr.strip():
        raise InputError(
            "--jq needs a jq expression (got an empty one)",
            hint="e.g. --jq '.id', or --json for the whole objects",
        )
    import jq  # heavy-ish C extension: only loaded when --jq is given

    try:
        return jq.compile(expr)
    except ValueError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
        raise InputError(
            f"--jq {expr!r} is not a valid jq expression ({first})", hint="fix the expression"
        ) from None


def run_jq(program: Any, data: Any, expr: str) -> list[Any]:
    from sophon_cli.client.errors import InputError

    try:
        return program.input_value(data).all()
    except ValueError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
        hint = "check the expression against --json output"
        if isinstance(data, list) and "array" in first:  # the usual slip: a per-object filter given the list
            hint = "a list command gives --jq one array of the objects: begin with .[] (--jq '.[] | .id')"
        raise InputError(f"--jq {expr!r} failed: {first}", hint=hint) from None


# ---- timestamps -------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string, a datetime or an epoch number as an aware datetime (zone-less = UTC);
    None for None, "" or text that is not a time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), timezone.utc)
    else:
        text = str(value).strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def rfc3339(value: Any) -> str:
    """RFC 3339 in UTC with the ``Z`` zone, to the second; "" for no time; unparsable text as is."""
    when = parse_time(value)
    if when is None:
        return "" if value is None else str(value)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def relative_time(value: Any, *, now: datetime | None = None) -> str:
    """'just now', '42 s ago', '3 min ago', '5 h ago', '2 d ago', 'in 3 h'; a date past 60 days."""
    when = parse_time(value)
    if when is None:
        return "" if value is None else str(value)
    now = now or datetime.now(timezone.utc)
    delta = (now - when).total_seconds()
    ahead = delta < 0
    secs = abs(delta)
    if secs < 5:
        return "just now"
    if secs >= 60 * 86400:
        return when.astimezone(timezone.utc).strftime("%Y-%m-%d")
    size, unit = next((s, u) for s, u in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")) if secs >= s)
    n = int(secs // size)
    return f"in {n} {unit}" if ahead else f"{n} {unit} ago"


# ---- table fitting --------------------------------------------------------------------------------

#: what a rich table without edges adds per column: padding 1+1 and a separator (one fewer than columns)
_CELL_OVERHEAD = 3
#: columns this wide or narrower are shown whole (statuses, sizes, times); wider ones may be cut
SHORT_CELL = 12


def fit_columns(
    header: Sequence[int], rows: Sequence[Sequence[int]], width: int, priority: Sequence[int]
) -> dict[int, int]:
    """The columns to show and their widths (index -> cells, in table order). The least important
    (last in ``priority``) are dropped until the rest fits with the first of ``priority`` at its full
    width and the others cut to their header (but never below :data:`SHORT_CELL` cells: short values
    such as a status are never cut); then the least important of the long columns are cut, just
    enough to fit. The first always stays."""
    natural = [max([h, *(r[i] for r in rows)]) for i, h in enumerate(header)]
    first = priority[0] if priority else 0

    def floor(i: int) -> int:
        return natural[i] if i == first else min(natural[i], max(header[i], SHORT_CELL))

    keep = list(priority)

    def overhead(n: int) -> int:
        return _CELL_OVERHEAD * n - 1

    while len(keep) > 1 and sum(floor(i) for i in keep) + overhead(len(keep)) > width:
        keep.pop()
    widths = {i: natural[i] for i in keep}
    excess = sum(widths.values()) + overhead(len(keep)) - width
    for i in reversed(keep):  # least important first
        if excess <= 0:
            break
        cut = min(excess, widths[i] - floor(i))
        widths[i] -= cut
        excess -= cut
    return dict(sorted(widths.items()))


#: colours of job statuses on a terminal
STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "canceled": "yellow",
    "queued": "blue",
    "probing": "cyan",
    "encoding": "cyan",
    "uploading": "cyan",
}


def status_style(status: str) -> str | None:
    return STATUS_STYLES.get(status.strip().lower())


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 file', '2 files' (``many`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _clock(seconds: float) -> str:
    if not 0.0 <= seconds < 10**9:  # NaN and infinity too: rich's own estimate shows no clock either
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _speed_column(rp: Any) -> Any:
    """Transfer speed in binary units (rich's own column uses decimal MB/s)."""

    class SpeedColumn(rp.ProgressColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            if speed is None:  # no rate measured: "?" while it runs, nothing once done (one instant step)
                return Text("" if task.finished else "?", style="progress.data.speed")
            return Text(f"{human_bytes(speed)}/s", style="progress.data.speed")

    return SpeedColumn()


def _eta_column(rp: Any) -> Any:
    """A rich column showing the server's ETA (task field ``eta``) when known, else rich's estimate."""

    class EtaColumn(rp.ProgressColumn):
        max_refresh = 0.5

        def render(self, task: Any) -> Any:
            from rich.text import Text

            eta = task.fields.get("eta")
            if eta is None:
                eta = task.time_remaining
            if task.finished:
                eta = 0
            return Text("-:--:--" if eta is None else _clock(eta), style="progress.remaining")

    return EtaColumn()


# ---- the line after a Ctrl-C ------------------------------------------------------------------

#: a live display of ours (progress bars, ``--watch``) was stopped by the Ctrl-C: its last redraw
#: covered the "^C" the terminal echoed and ended its line
_REDRAWN_BY_INTERRUPT = [False]


def live_stopped(exc_type: Any) -> None:
    """Called when a live display stops: ``exc_type`` is what ended it (KeyboardInterrupt: Ctrl-C)."""
    if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
        _REDRAWN_BY_INTERRUPT[0] = True


def _echoes_ctrl_c(stream: Any) -> bool:
    """``stream`` is a terminal that echoes a typed Ctrl-C as "^C" (ECHO and ECHOCTL, as by default)."""
    if not _isatty(stream):
        return False
    try:
        import termios

        lflag = termios.tcgetattr(stream.fileno())[3]
    except (ImportError, OSError, ValueError, AttributeError):  # no termios (Windows): a terminal
        return True
    return bool(lflag & termios.ECHO and lflag & getattr(termios, "ECHOCTL", termios.ECHO))


def interrupt_line(text: str, *, redrawn: bool = False, stream: Any = None) -> None:
    """Write the line said after a Ctrl-C (every command's "interrupted; ..." or "stopped ...").

    The terminal echoes the Ctrl-C as "^C" where the cursor is, which is the start of a line after
    our last one: the message read "^Cinterrupted; ...". On such a terminal it starts on a fresh
    line, unless a live display has been redrawn over the "^C" since (``redrawn``, or one of
    ours stopped by this Ctrl-C), which leaves the cursor at the start of a clean line."""
    stream = sys.stderr if stream is None else stream
    fresh = not (redrawn or _REDRAWN_BY_INTERRUPT[0]) and _echoes_ctrl_c(stream)
    stream.write(("\n" if fresh else "") + text + "\n")
    stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False
