"""The display of `sophon encode`: what the pipeline's events (``sophon_cli.encode.events``) look
like on a terminal (a live display on stderr), piped (one plain line per state change on stderr) and
with ``--json`` (one NDJSON event per state change, a final summary object on stdout), and the
summary table at the end (stdout).
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["Renderer", "plain_line", "summary_obj", "summary_table"]

_TERMINAL_EVENTS = ("done", "failed", "cached", "timed_out")


def count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def summary_obj(results: list[Any], *, interrupted: bool, exit_code: int) -> dict[str, Any]:
    src = sum(r.source_bytes or 0 for r in results)
    dst = sum(r.output_bytes or 0 for r in results if r.output_bytes is not None)
    return {
        "event": "summary",
        "files": [r.to_dict() for r in results],
        "counts": count(str(r.result) for r in results),
        "source_bytes": src,
        "output_bytes": dst,
        "interrupted": interrupted,
        "exit_code": exit_code,
    }


def _result_text(r: Any) -> str:
    if r.result == "encoded":
        return "encoded"
    if r.result == "failed":
        return f"failed: {r.reason}" if r.reason else "failed"
    return f"{r.result} ({r.reason})" if r.reason else r.result


def summary_table(out: Any, results: list[Any]) -> None:
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
    title = None
    if results and out.is_tty:
        saved_all = f", saved {100.0 * (src - dst) / src:.1f}%" if src and dst else ""
        title = f"{len(results)} files, {human_bytes(src)} -> {human_bytes(dst)}{saved_all}"
    out.table(columns, rows, title=title)


class Renderer:
    """Turns pipeline events into NDJSON (--json), a live display (TTY) or plain lines."""

    def __init__(self, out: Any, total: int) -> None:
        self.out = out
        self.total = total
        self.live = out.progress_enabled and out.err_is_tty and not out.json
        self.plain = not out.json and not out.quiet and not self.live
        self._lock = threading.Lock()
        self._bar: Any = None
        self._overall: Any = None
        self._tasks: dict[str, Any] = {}
        self._states: dict[str, str] = {}
        self._finished = 0

    def __enter__(self) -> Renderer:
        if self.live:
            from rich import progress as rp

            self._bar = rp.Progress(
                rp.TextColumn("{task.description}"),
                rp.BarColumn(),
                rp.TaskProgressColumn(),
                rp.TimeElapsedColumn(),
                console=self.out.err_console,
                transient=False,
            )
            self._bar.__enter__()
            self._overall = self._bar.add_task(f"{self.total} files", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            for task in list(self._tasks.values()):
                self._bar.remove_task(task)
            self._tasks.clear()
            self._bar.__exit__(*exc)
            self._bar = None

    def event(self, ev: Any) -> None:
        with self._lock:
            if self.out.json:
                data = ev.to_dict()
                data["ts"] = round(time.time(), 3)
                self.out.emit(data)
            elif self.plain:
                self.out.notice(plain_line(ev))
            if self._bar is not None:
                self._states[ev.file] = ev.state
                if ev.state in _TERMINAL_EVENTS:
                    task = self._tasks.pop(ev.file, None)
                    if task is not None:
                        self._bar.remove_task(task)
                    self._finished += 1
                    self._bar.update(self._overall, completed=self._finished)
                    if ev.state in ("failed", "timed_out"):
                        self._bar.console.print(plain_line(ev))
                else:  # a new step: its own progress starts (phases without one stay indeterminate)
                    task = self._task(ev.file)
                    self._bar.update(
                        task, completed=0, total=None, description=self._describe(ev.file, ev.state)
                    )

    def progress(self, p: Any) -> None:
        if self._bar is None:
            return
        file, phase, done, total = p.file, p.phase, p.done, p.total
        with self._lock:
            if file not in self._tasks and self._states.get(file) in _TERMINAL_EVENTS:
                return
            task = self._task(file)
            self._bar.update(task, completed=done, total=total, description=self._describe(file, phase))

    def _task(self, file: str) -> Any:
        task = self._tasks.get(file)
        if task is None:
            task = self._bar.add_task(self._describe(file, "starting"), total=None)
            self._tasks[file] = task
        return task

    @staticmethod
    def _describe(file: str, state: str) -> str:
        name = file if len(file) <= 40 else "…" + file[-39:]
        return f"  {name}  {state.replace('_', ' ')}"


def plain_line(ev: Any) -> str:
    d = ev.detail
    state = ev.state
    extra = ""
    if state == "uploading" and d.get("upload_id"):
        extra = f" ({d['upload_id']})"
    elif state == "uploaded":
        extra = " (resumed)" if d.get("resumed_upload") else ""
    elif state in ("job_created", "job_done") and d.get("job_id"):
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
