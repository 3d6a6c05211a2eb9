"""The typed results of a run: ``FileResult`` (every per-file fact a report needs), ``RunReport``
and, for ``--dry-run``, ``PlanItem``. Reports, step summaries and quality gates read these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sophon_cli.encode.entry import Result

__all__ = ["FileResult", "PlanItem", "RunReport", "Unscored"]


@dataclass
class FileResult:
    file: str  # the source as displayed (relative to the working directory when inside it)
    result: Result  # encoded | original kept | skipped | failed
    reason: str | None = None
    output: str | None = None  # the file written (the encode, or the original's copy)
    source_bytes: int | None = None
    output_bytes: int | None = None
    verified: bool | None = None  # the output matched a known sha256; False: only its size was checked
    verification: str | None = None  # how the output was checked, in words
    saved_percent: float | None = None
    profile: str | None = None
    effective_profile: str | None = None
    job_id: str | None = None
    upload_id: str | None = None
    cached: bool = False  # done by an earlier run; nothing was sent this time
    timed_out: bool = False  # --timeout gave up on the job (a rerun resumes waiting)
    vmaf: float | None = None  # mean VMAF of the encode vs its source (--min-vmaf / --check-quality)
    quality_below_threshold: bool = False  # the encode scored below --min-vmaf (reason has the score)
    next_step: str | None = None  # a failure's NextStep value (e.g. "overwrite"), for the front end

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["result"] = str(self.result)
        return data


@dataclass
class PlanItem:
    file: str
    action: str  # upload | resume upload | reuse upload | reuse job | download | skip
    output: str
    reason: str | None = None


@dataclass(frozen=True)
class Unscored:
    """An output a stop caught while it was being scored: downloaded (``verified``: against a
    sha256), kept at ``output``, with no score yet (the rerun scores it)."""

    file: str
    output: str
    verified: bool


@dataclass
class RunReport:
    results: list[FileResult]
    interrupted: bool = False  # stopped before the end: Ctrl-C, or ``Pipeline.stop()`` from outside
    ctrl_c: bool = False  # of which: by a Ctrl-C
    unfinished: int = 0  # files the run did not finish (interrupted or stopped by ``error``)
    error: BaseException | None = None  # what stopped the whole run (it is raised after this)
    display_error: Exception | None = None  # the first exception an event subscriber raised (no file's)
    unscored: list[Unscored] = field(default_factory=list)  # outputs a stop caught while scoring

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.result == Result.FAILED]
