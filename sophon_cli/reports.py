"""A batch run's results as files CI systems read: JSON, CSV, JUnit XML and a Markdown summary.

Every writer takes the typed per-file results of a run (``encode.FileResult``: file, result,
reason, output, sizes, profile, job id, ...) and a ``RunInfo`` about the run, and returns text:

- ``render_json``      one object: ``sophon_report`` (schema version), the run, ``totals``, ``files``
- ``render_csv``       one row per file, a fixed header (``vmaf`` stays empty until a score exists;
                       ``quality_below_threshold`` says whether ``--min-vmaf`` kept the original)
- ``render_junit``     one ``<testcase>`` per file, so any CI shows failed files as failed tests
                       (failed -> ``<failure>``, skipped -> ``<skipped>``, original kept -> passed
                       with the reason in ``<system-out>``)
- ``render_markdown``  totals, failures first with their reason, then a table (source, output,
                       saved, profile, result, job id; ``vmaf`` when any file has one) — GitHub's
                       step summary, GitLab or Buildkite annotations

``render(fmt, ...)`` picks one; ``format_for(path)`` picks it by extension (.json, .csv, .xml).
``write_report`` writes a file through the one safe writer (``client/files.py``: temp file +
rename, never through a symlink) and replaces an existing file only when it is an earlier report
of the same kind, so a rerun updates its report and nothing else is ever lost. ``append_summary`` appends to a file such as GitHub's
``GITHUB_STEP_SUMMARY``.

Text that came from the server (reasons, ids) is stripped of control characters where a human
reads it (Markdown, JUnit) and escaped for the format. This module never prints and imports no CLI
code.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sophon_cli.client.errors import InputError
from sophon_cli.units import human_bytes

__all__ = [
    "CSV_COLUMNS",
    "REPORT_SCHEMA",
    "FileRow",
    "ReportFormat",
    "RunInfo",
    "TargetError",
    "TargetProblem",
    "Totals",
    "append_summary",
    "check_target",
    "format_for",
    "render",
    "render_csv",
    "render_json",
    "render_junit",
    "render_markdown",
    "rows_from",
    "totals_of",
    "write_report",
]

REPORT_SCHEMA = 1
ENCODED, ORIGINAL_KEPT, SKIPPED, FAILED = "encoded", "original kept", "skipped", "failed"
MARKDOWN_MARKER = "<!-- sophon encode summary -->"
JUNIT_SUITE = "sophon encode"
CSV_COLUMNS = (
    "file",
    "result",
    "reason",
    "output",
    "source_bytes",
    "output_bytes",
    "saved_bytes",
    "saved_percent",
    "profile",
    "effective_profile",
    "job_id",
    "upload_id",
    "cached",
    "timed_out",
    "vmaf",
    "quality_below_threshold",
)


class ReportFormat(enum.Enum):
    JSON = "json"
    CSV = "csv"
    JUNIT = "junit"
    MARKDOWN = "markdown"


_EXTENSIONS = {".json": ReportFormat.JSON, ".csv": ReportFormat.CSV, ".xml": ReportFormat.JUNIT}


class _Result(Protocol):  # what a per-file result offers (encode.FileResult)
    file: str
    result: Any
    reason: str | None
    output: str | None
    source_bytes: int | None
    output_bytes: int | None
    saved_percent: float | None
    profile: str | None
    effective_profile: str | None
    job_id: str | None
    upload_id: str | None
    cached: bool
    timed_out: bool


@dataclass(frozen=True)
class FileRow:
    """One file as the reports show it (derived from a FileResult)."""

    file: str
    result: str
    reason: str | None = None
    output: str | None = None
    source_bytes: int | None = None
    output_bytes: int | None = None
    saved_bytes: int | None = None
    saved_percent: float | None = None
    profile: str | None = None
    effective_profile: str | None = None
    job_id: str | None = None
    upload_id: str | None = None
    cached: bool = False
    timed_out: bool = False
    vmaf: float | None = None  # a quality score, when the run measured one
    quality_below_threshold: bool = False  # the encode scored below --min-vmaf (the reason says so)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CSV_COLUMNS}


@dataclass(frozen=True)
class Totals:
    files: int = 0
    encoded: int = 0
    original_kept: int = 0
    skipped: int = 0
    failed: int = 0
    cached: int = 0
    source_bytes: int = 0
    output_bytes: int = 0
    saved_bytes: int = 0

    @property
    def saved_percent(self) -> float | None:
        if not self.source_bytes:
            return None
        return round(100.0 * self.saved_bytes / self.source_bytes, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "encoded": self.encoded,
            "original_kept": self.original_kept,
            "skipped": self.skipped,
            "failed": self.failed,
            "cached": self.cached,
            "source_bytes": self.source_bytes,
            "output_bytes": self.output_bytes,
            "saved_bytes": self.saved_bytes,
            "saved_percent": self.saved_percent,
        }


@dataclass(frozen=True)
class RunInfo:
    """About the run as a whole."""

    command: str = "sophon encode"
    version: str | None = None
    shard: str | None = None  # "2/4" when the run took one shard
    shard_source: str | None = None  # where the shard came from (e.g. "GitLab CI (...)")
    interrupted: bool = False
    exit_code: int | None = None
    duration_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _result_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def rows_from(results: Iterable[_Result]) -> list[FileRow]:
    rows = []
    for r in results:
        result = _result_text(r.result)
        saved = None
        if result in (ENCODED, ORIGINAL_KEPT) and r.source_bytes is not None and r.output_bytes is not None:
            saved = max(0, r.source_bytes - r.output_bytes)
        vmaf = getattr(r, "vmaf", None)
        rows.append(
            FileRow(
                file=r.file,
                result=result,
                reason=r.reason,
                output=r.output,
                source_bytes=r.source_bytes,
                output_bytes=r.output_bytes,
                saved_bytes=saved,
                saved_percent=r.saved_percent,
                profile=r.profile,
                effective_profile=r.effective_profile,
                job_id=r.job_id,
                upload_id=r.upload_id,
                cached=bool(r.cached),
                timed_out=bool(r.timed_out),
                vmaf=float(vmaf) if isinstance(vmaf, (int, float)) else None,
                quality_below_threshold=bool(getattr(r, "quality_below_threshold", False)),
            )
        )
    return rows


def totals_of(rows: Sequence[FileRow]) -> Totals:
    def count(result: str) -> int:
        return sum(1 for r in rows if r.result == result)

    return Totals(
        files=len(rows),
        encoded=count(ENCODED),
        original_kept=count(ORIGINAL_KEPT),
        skipped=count(SKIPPED),
        failed=count(FAILED),
        cached=sum(1 for r in rows if r.cached),
        source_bytes=sum(r.source_bytes or 0 for r in rows),
        output_bytes=sum(r.output_bytes or 0 for r in rows if r.output_bytes is not None),
        saved_bytes=sum(r.saved_bytes or 0 for r in rows),
    )


def _rows(results: Iterable[Any]) -> list[FileRow]:
    items = list(results)
    if all(isinstance(r, FileRow) for r in items):
        return items
    return rows_from(items)


# -- formats ---------------------------------------------------------------------------------------


def render_json(results: Iterable[Any], info: RunInfo | None = None) -> str:
    info = info or RunInfo()
    rows = _rows(results)
    doc: dict[str, Any] = {
        "sophon_report": REPORT_SCHEMA,
        "command": info.command,
        "version": info.version,
        "shard": info.shard,
        "shard_source": info.shard_source,
        "interrupted": info.interrupted,
        "exit_code": info.exit_code,
        "duration_seconds": info.duration_seconds,
        **info.extra,
        "totals": totals_of(rows).to_dict(),
        "files": [r.to_dict() for r in rows],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render_csv(results: Iterable[Any], info: RunInfo | None = None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in _rows(results):
        data = row.to_dict()
        writer.writerow(["" if data[c] is None else _csv_value(data[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _plain(text: Any) -> str:
    """Server- or user-supplied text for a human: no control characters, one line."""
    return _CONTROL.sub(" ", str(text)).strip()


def render_junit(results: Iterable[Any], info: RunInfo | None = None) -> str:
    import xml.etree.ElementTree as ET

    info = info or RunInfo()
    rows = _rows(results)
    t = totals_of(rows)
    name = JUNIT_SUITE + (f" (shard {info.shard})" if info.shard else "")
    time_attr = f"{info.duration_seconds:.3f}" if info.duration_seconds is not None else "0"
    counts = {
        "tests": str(t.files),
        "failures": str(t.failed),
        "errors": "0",
        "skipped": str(t.skipped),
        "time": time_attr,
    }
    root = ET.Element("testsuites", {"name": JUNIT_SUITE, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": name, **counts})
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("version", info.version),
        ("shard", info.shard),
        ("interrupted", "true" if info.interrupted else None),
        ("source_bytes", t.source_bytes),
        ("output_bytes", t.output_bytes),
        ("saved_bytes", t.saved_bytes),
    ):
        if value is not None:
            ET.SubElement(props, "property", {"name": key, "value": _xml(value)})
    for r in rows:
        case = ET.SubElement(
            suite, "testcase", {"classname": "sophon.encode", "name": _xml(r.file), "time": "0"}
        )
        details = _case_details(r)
        if r.result == FAILED:
            fail = ET.SubElement(case, "failure", {"message": _xml(r.reason or "failed"), "type": "failed"})
            fail.text = _xml(details)
        elif r.result == SKIPPED:
            ET.SubElement(case, "skipped", {"message": _xml(r.reason or "skipped")})
        out = ET.SubElement(case, "system-out")
        out.text = _xml(details)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _xml(value: Any) -> str:
    return _XML_ILLEGAL.sub(" ", str(value))


def _case_details(r: FileRow) -> str:
    lines = [f"result: {r.result}" + (f" ({_plain(r.reason)})" if r.reason else "")]
    if r.output:
        lines.append(f"output: {r.output}")
    if r.source_bytes is not None:
        sizes = f"source: {r.source_bytes} bytes"
        if r.output_bytes is not None:
            sizes += f", output: {r.output_bytes} bytes"
        if r.saved_bytes is not None:
            sizes += f", saved: {r.saved_bytes} bytes"
        lines.append(sizes)
    for label, value in (
        ("profile", _profile(r)),
        ("job", r.job_id),
        ("vmaf", None if r.vmaf is None else f"{r.vmaf:.2f}"),
    ):
        if value:
            lines.append(f"{label}: {value}")
    return "\n".join(lines)


def _profile(r: FileRow) -> str | None:
    if r.effective_profile and r.profile and r.effective_profile != r.profile:
        return f"{r.profile}/{r.effective_profile}"
    return r.profile or r.effective_profile


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def _md(text: Any) -> str:
    """Text for a Markdown table cell: one line, no HTML, no Markdown syntax."""
    s = _plain(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def _relative(path: str | None) -> str | None:
    if not path:
        return None
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def render_markdown(results: Iterable[Any], info: RunInfo | None = None) -> str:
    info = info or RunInfo()
    rows = _rows(results)
    t = totals_of(rows)
    title = "sophon encode"
    if info.shard:
        title += f" — shard {info.shard}"
    parts = [f"{t.encoded} encoded"]
    for n, label in ((t.original_kept, "original kept"), (t.skipped, "skipped"), (t.failed, "failed")):
        if n:
            parts.append(f"{n} {label}")
    lines = [MARKDOWN_MARKER, f"### {_md(title)}: {', '.join(parts)}", ""]
    size = f"{human_bytes(t.source_bytes)} → {human_bytes(t.output_bytes)}"
    if t.saved_percent is not None:
        size += f", saved {human_bytes(t.saved_bytes)} ({t.saved_percent:.1f}%)"
    facts = [f"**{t.files} file{'s' if t.files != 1 else ''}**", size]
    if t.cached:
        facts.append(f"{t.cached} already done by an earlier run")
    if info.interrupted:
        facts.append("**interrupted**: run the same command again to resume")
    lines += [" · ".join(facts), ""]
    failed = [r for r in rows if r.result == FAILED]
    if failed:
        lines.append(f"**Failed ({len(failed)}):**")
        lines.append("")
        lines += [f"- {_md(r.file)}: {_md(r.reason or 'no reason given')}" for r in failed]
        lines.append("")
    if rows:
        with_vmaf = any(r.vmaf is not None for r in rows)
        header = ["source", "output", "saved", "profile", "result", "job id"] + (
            ["VMAF"] if with_vmaf else []
        )
        lines.append("| " + " | ".join(header) + " |")
        lines.append(
            "|"
            + "|".join(["---", "---", "---:", "---", "---", "---"] + (["---:"] if with_vmaf else []))
            + "|"
        )
        order = {FAILED: 0, SKIPPED: 1, ORIGINAL_KEPT: 2, ENCODED: 3}
        for r in sorted(rows, key=lambda r: order.get(r.result, 0)):  # stable: input order within a kind
            if r.saved_bytes is not None:
                saved = human_bytes(r.saved_bytes)
                if r.saved_percent is not None:
                    saved += f" ({r.saved_percent:.1f}%)"
            else:
                saved = "-"
            result = r.result + (f": {_plain(r.reason)}" if r.reason else "")
            if r.cached:
                result += " (earlier run)"
            cells = [
                _md(r.file),
                _md(_relative(r.output) or "-"),
                saved,
                _md(_profile(r) or "-"),
                _md(result),
                f"`{_md_code(r.job_id)}`" if r.job_id else "-",
            ]
            if with_vmaf:
                cells.append("-" if r.vmaf is None else f"{r.vmaf:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _md_code(text: str) -> str:
    return _plain(text).replace("`", "'").replace("|", "\\|")


def render(fmt: ReportFormat, results: Iterable[Any], info: RunInfo | None = None) -> str:
    return {
        ReportFormat.JSON: render_json,
        ReportFormat.CSV: render_csv,
        ReportFormat.JUNIT: render_junit,
        ReportFormat.MARKDOWN: render_markdown,
    }[fmt](results, info)


def format_for(path: str | os.PathLike[str]) -> ReportFormat:
    """The report format a file name asks for: .json, .csv or .xml (JUnit)."""
    suffix = Path(path).suffix.lower()
    fmt = _EXTENSIONS.get(suffix)
    if fmt is None:
        raise TargetError(path, TargetProblem.UNKNOWN_FORMAT, None)
    return fmt


class TargetProblem(str, enum.Enum):
    """What is wrong with a path a report (or summary) was to be written to."""

    UNKNOWN_FORMAT = "unknown_format"  # its extension names no report format
    SYMLINK = "symlink"  # it is a symbolic link (never written through)
    DIRECTORY = "directory"  # it is a directory, not a file name
    NOT_OURS = "not_ours"  # it holds a file that is not an earlier report of the kind: left alone
    CANNOT_OPEN = "cannot_open"  # it could not be opened for appending (``detail`` says why)


class TargetError(InputError):
    """A report or summary cannot be written to ``path``: ``problem`` says why, ``fmt`` is the
    format that was to be written there (None when the path named none), ``detail`` the system's
    words when it has some. The message and hint are plain words; a front end that took the path
    from an option names that option itself."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        problem: TargetProblem,
        fmt: ReportFormat | None,
        *,
        detail: str = "",
    ) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        self.fmt = fmt
        self.detail = detail
        what = self.kind
        message, hint = {
            TargetProblem.UNKNOWN_FORMAT: (
                f"cannot tell the report format of {self.path!r}",
                "name it *.json, *.csv or *.xml (JUnit)",
            ),
            TargetProblem.SYMLINK: (
                f"{self.path} is a symlink; {what}s are never written through one",
                "pick another path",
            ),
            TargetProblem.DIRECTORY: (f"{self.path} is a directory", f"give a file name for the {what}"),
            TargetProblem.NOT_OURS: (
                f"{self.path} exists and is not an earlier sophon {what}; it was left alone",
                "pick another path, or move that file away",
            ),
            TargetProblem.CANNOT_OPEN: (
                f"cannot append the {what} to {self.path}: {detail}",
                "check the path (symlinks are not followed)",
            ),
        }[problem]
        super().__init__(message, hint=hint)

    @property
    def kind(self) -> str:
        """What was to be written: "summary" (Markdown) or "report"."""
        return "summary" if self.fmt is ReportFormat.MARKDOWN else "report"


# -- files -----------------------------------------------------------------------------------------


def _is_ours(path: Path, fmt: ReportFormat) -> bool:
    """Whether ``path`` holds an earlier report of this kind (or nothing), so replacing it loses nothing."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if not head.strip():
        return True
    text = head.decode("utf-8", "replace")
    if fmt is ReportFormat.JSON:
        return bool(re.match(r'\s*\{\s*"sophon_report"\s*:', text))
    if fmt is ReportFormat.CSV:
        return text.startswith(",".join(CSV_COLUMNS[:3]) + ",")
    if fmt is ReportFormat.JUNIT:
        return f'<testsuites name="{JUNIT_SUITE}"' in text
    return text.startswith(MARKDOWN_MARKER)


def check_target(path: str | os.PathLike[str], fmt: ReportFormat) -> Path:
    """Raise TargetError unless ``path`` may receive a report: not a symlink, not a directory, and
    either absent or an earlier report of the same format. Returns the absolute path."""
    target = Path(os.path.abspath(path))
    if target.is_symlink():
        raise TargetError(path, TargetProblem.SYMLINK, fmt)
    if target.is_dir():
        raise TargetError(path, TargetProblem.DIRECTORY, fmt)
    if target.exists() and not _is_ours(target, fmt):
        raise TargetError(path, TargetProblem.NOT_OURS, fmt)
    return target


def write_report(path: str | os.PathLike[str], text: str, fmt: ReportFormat) -> Path:
    """Write ``text`` to ``path`` after ``check_target``, through the one safe writer of user files
    (``client/files.py``: a hidden temporary file, verified, fsynced, moved into place). Only an
    earlier report found by ``check_target`` may be replaced; a file that appears meanwhile is not."""
    import hashlib

    from sophon_cli.client.files import SafeWriter

    target = check_target(path, fmt)
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    with SafeWriter(
        target,
        force=os.path.lexists(target),  # it is an earlier report (check_target): replace it
        expected_size=len(data),
        expected_sha256=digest,
        resume=False,
    ) as writer:
        if not writer.already_present:  # the same bytes are there already: nothing to do
            writer.write(data)
            writer.commit()
    return target


def append_summary(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to a summary file (e.g. GitHub's ``GITHUB_STEP_SUMMARY``), never through a symlink."""
    if os.path.islink(path):
        raise TargetError(path, TargetProblem.SYMLINK, ReportFormat.MARKDOWN)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise TargetError(
            path, TargetProblem.CANNOT_OPEN, ReportFormat.MARKDOWN, detail=str(exc.strerror or exc)
        ) from None
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
