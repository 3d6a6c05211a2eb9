"""The display of `sophon encode`: what the pipeline's events (``sophon_cli.encode.events``) look
like on a terminal (a live display on stderr), piped (one plain line per state change on stderr) and
with ``--json`` (one NDJSON event per state change, a final summary object on stdout), and the
summary table at the end (stdout). A reader of stdout that goes away (``| head -1``) stops the run
(``Renderer.reader_gone``; so does the reader of the plain lines on stderr); nothing more is
written there.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from sophon_cli.cli.output import PipeClosed

__all__ = ["Renderer", "plain_line", "summary_obj", "summary_table"]

_TERMINAL_EVENTS = ("done", "failed", "cached", "timed_out")


def count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def summary_obj(
    results: list[Any], *, interrupted: bool, exit_code: int, unscored: list[Any] = ()
) -> dict[str, Any]:
    """The final ``--json`` object; ``unscored`` (outputs a stop caught while they were scored:
    kept, downloaded, not scored yet) is listed when there are any."""
    from dataclasses import asdict

    src = sum(r.source_bytes or 0 for r in results)
    dst = sum(r.output_bytes or 0 for r in results if r.output_bytes is not None)
    extra = {"unscored": [asdict(u) for u in unscored]} if unscored else {}
    return {
        "event": "summary",
        "files": [r.to_dict() for r in results],
        "counts": count(str(r.result) for r in results),
        "source_bytes": src,
        "output_bytes": dst,
        "interrupted": interrupted,
        "exit_code": exit_code,
        **extra,
    }


def _result_text(r: Any) -> str:
    if r.result == "encoded":
        return "encoded"
    if r.result == "failed":
        return f"failed: {r.reason}" if r.reason else "failed"
    return f"{r.result} ({r.reason})" if r.reason else r.result


def summary_table(out: Any, results: list[Any]) -> None:
    """The table of results (stdout). Piped: tab-separated lines as every table. On a terminal: a
    rich table fitted to the width (columns dropped by priority, file names and results cut with
    "…", never wrapped), and nothing at all when no file finished (e.g. interrupted early)."""
    from sophon_cli.cli.output import human_bytes

    rows = []
    for r in results:
        saved = "-" if r.saved_percent is None else f"{r.saved_percent:.1f}%"
        prof = r.profile or "-"
        if r.effective_profile and r.effective_profile != r.profile:
            prof = f"{prof}/{r.effective_profile}"
        rows.append(
            [
                r.file,
                human_bytes(r.source_bytes),
                human_bytes(r.output_bytes),
                saved,
                prof,
                _result_text(r),
            ]
        )
    src = sum(r.source_bytes or 0 for r in results)
    dst = sum(r.output_bytes or 0 for r in results if r.output_bytes is not None)
    columns = ["file", "source", "output", "saved", "profile", "result"]
    if any(r.vmaf is not None for r in results):
        columns.insert(4, "vmaf")
        for row, r in zip(rows, results, strict=True):
            row.insert(4, "-" if r.vmaf is None else f"{r.vmaf:.2f}")
    if not out.is_tty:
        out.table(columns, rows)
        return
    if not results:
        return
    saved_all = f", saved {100.0 * (src - dst) / src:.1f}%" if src and dst else ""
    title = f"{len(results)} {'file' if len(results) == 1 else 'files'}, {human_bytes(src)} -> {human_bytes(dst)}{saved_all}"
    fitted_table(out, columns, rows, title=title, priority=SUMMARY_PRIORITY, shrink=SUMMARY_SHRINK)


#: Which summary columns go first when the terminal is narrow (higher numbers are dropped first);
#: ``file`` and ``result`` always stay and are cut instead.
SUMMARY_PRIORITY = {"file": 0, "result": 0, "saved": 1, "output": 2, "source": 3, "vmaf": 4, "profile": 5}
#: Columns that may be cut to fit, with the narrowest width they are cut to.
SUMMARY_SHRINK = {"file": 16, "result": 16}
_TABLE_GAP = 3  # " │ " between columns
_TABLE_EDGE = 2  # one space of padding at each end (show_edge=False)


def fit_columns(
    widths: dict[str, int], width: int, priority: dict[str, int], shrink: dict[str, int]
) -> dict[str, int]:
    """Column widths that fit ``width`` cells: drop the columns of highest ``priority`` number until
    the rest fit with the ``shrink`` columns at their minimum, then share the room left among the
    shrinkable columns (the narrowest first). Returns the kept columns (in the given order) with their widths."""
    kept = dict(widths)

    def floor(name: str) -> int:
        return min(kept[name], shrink[name]) if name in shrink else kept[name]

    def needed() -> int:
        return sum(floor(n) for n in kept) + _TABLE_GAP * (len(kept) - 1) + _TABLE_EDGE

    droppable = sorted((n for n in kept if priority.get(n, 9) > 0), key=lambda n: -priority.get(n, 9))
    while droppable and needed() > width:
        kept.pop(droppable.pop(0))
    room = width - needed()
    fitted = {n: floor(n) for n in kept}
    growing = [n for n in kept if n in shrink]
    while room > 0:  # the room left goes to the narrowest cut column, one cell at a time
        short = [n for n in growing if fitted[n] < kept[n]]
        if not short:
            break
        fitted[min(short, key=lambda n: fitted[n])] += 1
        room -= 1
    return fitted


def fitted_table(
    out: Any,
    columns: list[str],
    rows: list[list[str]],
    *,
    title: str | None,
    priority: dict[str, int],
    shrink: dict[str, int],
) -> None:
    """A rich table on ``out``'s terminal that never wraps: see ``fit_columns``."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    from sophon_cli.client.text import terminal_safe

    rows = [[terminal_safe(cell) for cell in row] for row in rows]  # names are text, never markup
    widths = {c: max([cell_len(c)] + [cell_len(row[i]) for row in rows]) for i, c in enumerate(columns)}
    fitted = fit_columns(widths, out.console.width, priority, shrink)
    table = Table(title=title, show_edge=False, header_style="bold" if out.color else None)
    keep = [i for i, c in enumerate(columns) if c in fitted]
    for i in keep:
        c = columns[i]
        table.add_column(c, no_wrap=True, overflow="ellipsis", width=fitted[c])
    for row in rows:
        cells = []
        for i in keep:
            text = row[i]
            if i == 0:  # the identifier: keep its end (the file name), cut the front
                text = clip_left(text, fitted[columns[i]])
            cells.append(Text(text))
        table.add_row(*cells)
    out.console.print(table)


def clip_left(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, cut at the front with "…" (the end is what names it)."""
    from rich.cells import cell_len

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    keep = ""
    for ch in reversed(text):
        if cell_len(ch + keep) > width - 1:
            break
        keep = ch + keep
    return "…" + keep


# -- the live display (TTY) -------------------------------------------------------------------------

#: How much of a file's work each weighted phase is, for the overall bar (the rest is bookkeeping).
PHASE_WEIGHTS = {"uploading": 0.5, "encoding": 0.45, "downloading": 0.05}
_BYTE_PHASES = ("hashing", "uploading", "downloading")
#: a line's bar fraction when it shows no bar at all (None is an indeterminate, pulsing bar)
NO_BAR = -1.0
_STATE_LABELS = {
    "job_created": "job created",
    "job_status": "encoding",
    "job_done": "encoded",
    "timed_out": "timed out",
    "scoring_failed": "scoring failed",
}


class Rate:
    """Units per second over the last ``window`` seconds of samples (None until it can tell)."""

    def __init__(self, window: float = 10.0, clock: Any = time.monotonic) -> None:
        from collections import deque

        self.window = window
        self.clock = clock
        self._samples: Any = deque()

    def reset(self) -> None:
        self._samples.clear()

    def add(self, value: float) -> None:
        now = self.clock()
        self._samples.append((now, value))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def per_second(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        # the newest sample ages: a transfer that stalled shows a falling rate
        span = max(t1 - t0, self.clock() - t0)
        if span < 0.5 or v1 < v0:
            return None
        return (v1 - v0) / span


def format_eta(seconds: float | None) -> str | None:
    """``H:MM:SS`` as `sophon upload`'s bars show it; None when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 100 * 3600:
        return None
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bytes_pair(done: float, total: float | None) -> str:
    """``1.2/3.4 MiB`` (one unit when both share it), ``512.0 KiB/3.4 MiB`` otherwise."""
    from sophon_cli.cli.output import human_bytes

    if total is None:
        return human_bytes(done)
    a, b = human_bytes(done), human_bytes(total)
    num, _, unit_a = a.partition(" ")
    _, _, unit_b = b.partition(" ")
    return f"{num}/{b}" if unit_a == unit_b else f"{a}/{b}"


class FileView:
    """What the display knows of one file."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.label = "waiting"  # what it is doing now, as shown
        self.phase: str | None = None  # the Progress phase being shown (bar and figures)
        self.done = 0.0
        self.total: float | None = None
        self.fps: float | None = None
        self.eta_seconds: float | None = None
        self.rate = Rate()
        self.stages: dict[str, float] = {}
        self.active = False
        self.finished = False

    def fraction(self) -> float:
        if self.finished:
            return 1.0
        return sum(w * self.stages.get(phase, 0.0) for phase, w in PHASE_WEIGHTS.items())

    def stage_done(self, *phases: str) -> None:
        for phase in phases:
            self.stages[phase] = 1.0

    def show(self, label: str, phase: str | None = None) -> None:
        """Switch to a new step: its figures start over."""
        if phase != self.phase:
            self.rate.reset()
            self.done, self.total, self.fps, self.eta_seconds = 0.0, None, None, None
        self.label, self.phase, self.active = label, phase, True

    def info(self) -> list[tuple[str, int]]:
        """The figures after the bar, each with its priority (higher numbers are dropped first)."""
        if self.phase in _BYTE_PHASES:
            pieces = [(bytes_pair(self.done, self.total), 3)]
            rate = self.rate.per_second()
            if rate is not None:
                from sophon_cli.cli.output import human_bytes

                pieces.append((f"{human_bytes(rate)}/s", 2))
                if self.total:
                    eta = format_eta((self.total - self.done) / rate) if rate > 0 else None
                    if eta:
                        pieces.append((f"eta {eta}", 1))
            return pieces
        if self.phase == "encoding" and self.label == "encoding" and self.total:
            pieces = [(f"{100.0 * self.done / self.total:.0f}%", 0)]
            if self.fps is not None and self.fps > 0:
                pieces.append((f"{self.fps:.0f} fps", 2))
            eta = format_eta(self.eta_seconds)
            if eta:
                pieces.append((f"eta {eta}", 1))
            return pieces
        return []

    def bar_fraction(self) -> float | None:
        if self.label == "queued":
            return NO_BAR  # nothing is happening to it yet: no bar, not a pulsing one
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


class Renderer:
    """Turns pipeline events into NDJSON (--json), a live display (TTY) or plain lines.

    The live display (stderr) is one overall line, which advances with the bytes uploaded, the
    encode progress and the bytes downloaded of every file weighted by its size (``PHASE_WEIGHTS``)
    and shows an overall ETA, then one line per active file: bytes, rate and ETA while uploading or
    downloading, ``queued`` for a queued job, percent, fps and ETA (the server's) while encoding.
    Every line is fitted to the terminal's width: figures are dropped by priority, names cut.
    """

    refresh_per_second = 8

    def __init__(self, out: Any, sources: Any) -> None:
        self.out = out
        if isinstance(sources, int):  # a count (sizes unknown: every file weighs the same)
            sources = [None] * sources
        self.total = len(sources)
        self.live = out.progress_enabled and out.err_is_tty and not out.json
        self.plain = not out.json and not out.quiet and not self.live
        self._lock = threading.Lock()
        self._live: Any = None
        self._files: dict[str, FileView] = {}
        for i, src in enumerate(sources):
            name = getattr(src, "display", None) or f"#{i}"
            self._files[name] = FileView(name, _size_of(src))
        self._overall_rate = Rate(window=20.0)
        # the name column is as wide as the longest name (with its indent), so lines do not shift
        self._name_w = max([2 + len(n) for n in self._files] + [len(f"{self.total} files")])
        self._closing = False
        #: the reader of stdout (``| head -1``) or of the plain lines on stderr (``2>&1 | head -1``)
        #: went away: nothing more is written there, and ``on_reader_gone`` (the run's stop) is
        #: called once
        self.stdout_closed = False
        self.stderr_closed = False
        self.on_reader_gone: Any = None

    def __enter__(self) -> Renderer:
        if self.live:
            from rich.live import Live

            self._live = Live(
                console=self.out.err_console,
                get_renderable=self._renderable,
                refresh_per_second=self.refresh_per_second,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            with self._lock:
                self._closing = True  # the last frame keeps only the overall line
            try:
                self._live.refresh()
            finally:
                self._live.__exit__(*exc)
                self._live = None

    # -- the pipeline's callbacks (worker threads) ----------------------------------------------
    def event(self, ev: Any) -> None:
        with self._lock:
            if self.out.json:
                if not self.stdout_closed:
                    data = ev.to_dict()
                    data["ts"] = round(time.time(), 3)
                    try:
                        self.out.emit(data)
                    except PipeClosed:
                        self.reader_gone("stdout")
            elif self.plain and not self.stderr_closed:
                try:
                    self.out.notice(plain_line(ev))
                except BrokenPipeError:
                    self.reader_gone("stderr")
            live = self._live
            if live is None:
                return
            self._apply(ev)
        if ev.state in ("failed", "timed_out"):
            # above the live lines; outside the lock, which drawing takes (rich's lock, then ours)
            live.console.print(_clean(plain_line(ev)))

    def reader_gone(self, stream: str) -> None:
        """The reader of ``stream`` ("stdout" or "stderr") is gone: stop the run (as a Ctrl-C
        does: every step saved, no partial output in place) instead of working on for a reader
        that reads no more."""
        first = not (self.stdout_closed or self.stderr_closed)
        if stream == "stdout":
            self.stdout_closed = True
        else:
            self.stderr_closed = True
        if first and self.on_reader_gone is not None:
            self.on_reader_gone()

    def _apply(self, ev: Any) -> None:
        f = self._file(ev.file)
        state = ev.state
        if state in _TERMINAL_EVENTS:
            f.finished, f.active = True, False
            return
        if f.finished:
            return
        if state in ("hashing", "uploading"):
            f.show(state, state)
        elif state == "uploaded":
            f.stage_done("uploading")
            f.show("uploaded")
        elif state == "job_reused" and ev.detail.get("job_status") in ("completed", "failed", "canceled"):
            f.stage_done("uploading", "encoding")
            f.show("encoded" if ev.detail["job_status"] == "completed" else "job reused")
        elif state in ("job_created", "job_reused", "job_status"):
            f.stage_done("uploading")
            status = ev.detail.get("job_status")
            f.show("queued" if status == "queued" else "encoding", "encoding")
        elif state == "job_done":
            f.stage_done("uploading", "encoding")
            f.show("encoded")
        elif state == "downloading":
            f.stage_done("uploading", "encoding")
            f.show("downloading", "downloading")
        elif state == "downloaded":
            f.stage_done(*PHASE_WEIGHTS)
            f.show("downloaded")
        else:
            f.show(_STATE_LABELS.get(state, state.replace("_", " ")), None)

    def progress(self, p: Any) -> None:
        if self._live is None:
            return
        with self._lock:
            f = self._file(p.file)
            if f.finished:
                return
            if p.phase == "encoding":
                f.stage_done("uploading")
                label = "queued" if p.status == "queued" else "encoding"
                f.show(label, "encoding")
                f.fps, f.eta_seconds = p.fps, p.eta_seconds
            elif p.phase != f.phase or f.label != p.phase:
                f.show(p.phase, p.phase)
            f.done, f.total = float(p.done), None if p.total is None else float(p.total)
            if p.phase in _BYTE_PHASES:
                f.rate.add(f.done)
            if p.phase in PHASE_WEIGHTS and f.total:
                frac = max(0.0, min(1.0, f.done / f.total))
                f.stages[p.phase] = max(f.stages.get(p.phase, 0.0), frac)

    def _file(self, name: str) -> FileView:
        f = self._files.get(name)
        if f is None:  # not announced up front (e.g. a count was given): weigh it like the mean
            sizes = [v.size for v in self._files.values()]
            f = self._files[name] = FileView(name, int(sum(sizes) / len(sizes)) if sizes else 1)
        return f

    # -- drawing (rich's refresh thread) --------------------------------------------------------
    def _overall_done(self) -> float:
        return sum(f.size * f.fraction() for f in self._files.values())

    def _renderable(self) -> Any:
        with self._lock:
            return self._render(self.out.err_console.width, self.out.err_console.height)

    def _render(self, width: int, height: int) -> Any:
        from rich.console import Group

        files = list(self._files.values())
        size = sum(f.size for f in files) or 1
        done = self._overall_done()
        self._overall_rate.add(done)  # sampled as drawn (8 times a second), not per callback
        finished = sum(1 for f in files if f.finished)
        fraction = done / size
        overall_info = [(f"{100.0 * fraction:.0f}%", 0)]
        rate = self._overall_rate.per_second()
        if rate and fraction < 1.0:
            eta = format_eta((size - done) / rate)
            if eta:
                overall_info.append((f"eta {eta}", 1))
        noun = "file" if self.total == 1 else "files"
        lines = [(f"{self.total} {noun}", f"{finished}/{self.total} done", fraction, overall_info)]
        active = [] if self._closing else [f for f in files if f.active and not f.finished]
        room = max(1, height - 2)
        shown = active[:room]
        for f in shown:
            lines.append(("  " + f.name, f.label, f.bar_fraction(), f.info()))
        rows = fit_lines(
            lines, width, name_hint=self._name_w, label_hint=len(f"{self.total}/{self.total} done")
        )
        if len(active) > len(shown):
            from rich.text import Text

            rows.append(Text(f"  … and {len(active) - len(shown)} more", no_wrap=True, overflow="ellipsis"))
        return Group(*rows)


_BAR_MAX = 40
_BAR_MIN = 8
_NAME_MIN = 14
#: the widest label a file line shows ("downloading"): the label column keeps this width
_LABEL_W = 11
#: the figures column: room for "123.4/456.7 MiB  12.3 MiB/s  eta 0:01:02"
_FIGURES_W = 41


def fit_lines(
    lines: list[tuple[str, str, float | None, list[tuple[str, int]]]],
    width: int,
    *,
    name_hint: int = 0,
    label_hint: int = 0,
) -> list[Any]:
    """Lay out ``(name, label, bar fraction or None or NO_BAR, [(figure, priority)])`` lines in
    columns that fit ``width`` cells: name, label, bar, figures. The columns depend only on the
    width and the hints (the longest name and label of the run), so lines do not shift from frame
    to frame. Figures that do not fit their column are dropped by priority (highest number
    first); on a very narrow terminal the bar goes too; names are cut at the front."""
    from rich.cells import cell_len
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    from sophon_cli.client.text import terminal_safe

    # a file name is text, never rich markup ("a[/b]c.mp4" is a valid path) nor a terminal sequence
    lines = [(terminal_safe(name), label, frac, info) for name, label, frac, info in lines]
    width = max(width, 20)
    label_w = max([_LABEL_W, label_hint] + [cell_len(label) for _, label, _, _ in lines])
    name_full = max([name_hint] + [cell_len(name) for name, _, _, _ in lines])
    name_w = min(name_full, max(_NAME_MIN, width // 4))
    bar_w = max(_BAR_MIN, min(_BAR_MAX, width - name_w - label_w - _FIGURES_W - 3))
    figures_w = width - name_w - label_w - bar_w - 3
    if figures_w < 8:  # very narrow: no bar
        bar_w, figures_w = 0, width - name_w - label_w - 2
    if figures_w < 4:
        figures_w, name_w = 0, max(1, width - label_w - 1)
    else:  # what the bar and the figures leave goes to the name
        leftover = figures_w - _FIGURES_W
        if leftover > 0:
            grow = min(leftover, name_full - name_w)
            name_w, figures_w = name_w + grow, figures_w - grow

    rows = []
    for name, label, frac, info in lines:
        info = list(info)
        while info and sum(cell_len(t) for t, _ in info) + 2 * (len(info) - 1) > figures_w:
            droppable = [i for i, (_, p) in enumerate(info) if p > 0]
            if not droppable:
                break  # what is left is cut with "…"
            del info[max(droppable, key=lambda i: (info[i][1], i))]
        grid = Table.grid(padding=(0, 1, 0, 0))
        grid.add_column(width=name_w, no_wrap=True, overflow="ellipsis")
        grid.add_column(width=label_w, no_wrap=True, overflow="ellipsis")
        indent = name[: len(name) - len(name.lstrip(" "))]
        cells: list[Any] = [
            Text(indent + clip_left(name[len(indent) :], max(1, name_w - len(indent)))),
            Text(label),
        ]
        if bar_w:
            grid.add_column(width=bar_w, no_wrap=True)
            if frac == NO_BAR:
                cells.append("")
            elif frac is None:
                cells.append(ProgressBar(total=None, width=bar_w))
            else:
                cells.append(ProgressBar(total=1.0, completed=frac, width=bar_w))
        if figures_w:
            grid.add_column(width=figures_w, no_wrap=True, overflow="ellipsis")
            cells.append("  ".join(t for t, _ in info))
        grid.add_row(*cells)
        rows.append(grid)
    return rows


def _size_of(src: Any) -> int:
    path = getattr(src, "path", None)
    if path is None:
        return 1
    try:
        return max(1, os.stat(path).st_size)
    except OSError:
        return 1


def _clean(text: str) -> str:
    """A line for the terminal: no control characters (server text), no rich markup."""
    from rich.markup import escape

    return escape("".join(ch if ch.isprintable() else " " for ch in text))


def plain_line(ev: Any) -> str:
    d = ev.detail
    state = ev.state
    extra = ""
    if state == "uploading" and d.get("upload_id"):
        extra = f" ({d['upload_id']})"
    elif state == "uploaded":
        extra = " (resumed)" if d.get("resumed_upload") else ""
    elif state in ("job_created", "job_reused", "job_done") and d.get("job_id"):
        extra = f" ({d['job_id']} {d.get('job_status', '')})".rstrip()
    elif state in ("job_created", "job_done", "job_status") and d.get("job_status"):
        extra = f" ({d['job_status']})"
    elif state == "done":
        extra = f": {d.get('result')}"
        if d.get("reason"):
            extra += f" ({d['reason']})"
    elif state == "cached":
        extra = f": already done ({d.get('result')})"
    elif state == "failed":
        extra = f": {d.get('reason')}"
    elif state == "fallback":
        extra = f": keeping the original ({d.get('reason')})"
    elif state == "scored" and isinstance(d.get("vmaf"), (int, float)):
        extra = f" (VMAF {d['vmaf']:.2f})"
    elif state == "scoring_failed":
        extra = f": {d.get('reason')}"
    elif state == "timed_out":
        extra = f": still {d.get('job_status')}; run again to resume"
    return f"{ev.file}: {state.replace('_', ' ')}{extra}"
