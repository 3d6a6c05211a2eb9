"""How jobs look: one-line records, `job get` fields, the `job list` table, progress while waiting.

Used by the job commands (``cli/job.py``) and by the live ``--watch`` views; pure functions of the
job objects (pydantic models or plain dicts) except :func:`wait_for_jobs`, which drives a progress
display through the library's poller.
"""

from __future__ import annotations

import json
from typing import Any

from sophon_cli.cli.output import human_bytes, status_style

TERMINAL = ("completed", "failed", "canceled")

#: `job list` columns, and the order they are given up in on a narrow terminal (most important first)
LIST_COLUMNS = ["id", "status", "source", "profile", "created", "progress"]
LIST_PRIORITY = [0, 1, 5, 2, 4, 3]


def get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def is_terminal(job: Any) -> bool:
    return get(job, "status") in TERMINAL


def progress_text(job: Any) -> str:
    status = get(job, "status")
    progress = get(job, "progress")
    percent = get(progress, "percent")
    if status in TERMINAL:
        return "100%" if status == "completed" else "-"
    return f"{percent:.0f}%" if isinstance(percent, (int, float)) else ""


def failure_reason(job: Any) -> str | None:
    """'<error> (<status_reason>)', either alone, or None."""
    error = get(job, "error")
    code = get(job, "status_reason")
    if error and code and code not in error:
        return f"{error} ({code})"
    return error or code or None


def job_fields(job: Any) -> list[str]:
    """The fields of a job's one-line record: id, status, and a note when there is one."""
    status = str(get(job, "status"))
    reason = failure_reason(job)
    fields = [str(get(job, "id")), status]
    if status == "completed" and get(job, "final_artifact") == "original":
        fields.append("(kept the original: no smaller output was made)")
    elif status in ("failed", "canceled") and reason:
        fields.append(f"({reason})")
    return fields


def job_line(job: Any) -> str:
    """The one-line record as a terminal shows it (fields two spaces apart)."""
    return "  ".join(job_fields(job))


def job_rows(job: Any, when: Any = None, sources: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    """``job get``'s fields; ``when`` formats timestamps (``Output.when``); ``sources`` as for
    :func:`source_label`."""
    from sophon_cli.cli.output import rfc3339

    when = when or rfc3339
    source = get(job, "source")
    output = get(job, "output")
    rows: list[tuple[str, Any]] = [("id", get(job, "id")), ("status", get(job, "status"))]
    if get(job, "status_reason"):
        rows.append(("reason", get(job, "status_reason")))
    profile = get(job, "profile")
    effective = get(job, "effective_profile_id")
    rows.append(("profile", f"{profile} ({effective})" if effective and effective != profile else profile))
    if get(job, "status") not in TERMINAL:
        rows.append(("progress", progress_description(job, with_id=False)))
    label = source_label(job, sources or {})
    src = [label] if label != "-" else []
    if get(source, "resolution"):
        src.append(str(get(source, "resolution")))
    if get(source, "bytes") is not None:
        src.append(human_bytes(get(source, "bytes")))
    rows.append(("source", ", ".join(s for s in src if s)))
    out = [str(get(output, "state") or ""), str(get(output, "container") or "")]
    if get(output, "width") and get(output, "height"):
        out.append(f"{get(output, 'width')}x{get(output, 'height')}")
    if get(output, "bytes") is not None:
        out.append(human_bytes(get(output, "bytes")))
    rows.append(("output", ", ".join(s for s in out if s)))
    if get(job, "final_artifact"):
        rows.append(("final artifact", get(job, "final_artifact")))
    if get(job, "saved_percent") is not None:
        rows.append(("saved", f"{get(job, 'saved_percent')}%"))
    metadata = get(job, "metadata")
    if metadata:
        rows.append(("metadata", json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)))
    rows.append(("created", when(get(job, "created_at"))))
    if get(job, "started_at"):
        rows.append(("started", when(get(job, "started_at"))))
    if get(job, "completed_at"):
        rows.append(("finished", when(get(job, "completed_at"))))
    if get(job, "error"):
        rows.append(("error", get(job, "error")))
    return rows


def format_eta(seconds: float | None) -> str:
    """The one ETA format: H:MM:SS."""
    if seconds is None or seconds < 0:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def job_eta(job: Any) -> float | None:
    eta = get(get(job, "progress"), "eta_seconds")
    if not isinstance(eta, (int, float)) or isinstance(eta, bool):
        return None
    # the server's estimate; JSON's 1e400 parses as infinity, which no clock can show
    return float(eta) if 0 <= eta < 10**9 else None


def progress_description(job: Any, *, with_id: bool = True) -> str:
    """'job_1 encoding 30 fps' (the ETA is shown once, by the progress display's ETA column)."""
    progress = get(job, "progress")
    parts = [str(get(job, "id"))] if with_id else []
    parts.append(str(get(progress, "phase") or get(job, "status") or ""))
    percent = get(progress, "percent")
    if not with_id and isinstance(percent, (int, float)):
        parts.append(f"{percent:.0f}%")
    fps = get(progress, "fps")
    if isinstance(fps, (int, float)) and fps > 0:
        parts.append(f"{fps:.0f} fps")
    if not with_id and job_eta(job) is not None:
        parts.append(f"eta {format_eta(job_eta(job))}")
    return " ".join(parts)


def failed_error(jobs: list[Any]):
    """The JobFailedError for the failed/canceled jobs among ``jobs`` (None when all completed)."""
    from sophon_cli.client.errors import JobFailedError

    bad = [j for j in jobs if get(j, "status") in ("failed", "canceled")]
    if not bad:
        return None
    first = bad[0]
    reason = failure_reason(first) or "no reason given"
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return JobFailedError(
        f"job {get(first, 'id')} ended {get(first, 'status')}: {reason}{more}",
        job=first,
        hint=f"see `sophon job get {get(first, 'id')}`",
    )


def render_job(out: Any, job: Any) -> None:
    """One job as a record: the API object with --json, else its fields (tabs when piped)."""
    if out.json:
        out.emit(job)
    else:
        out.fields(*job_fields(job))


# ---- job list --------------------------------------------------------------------------------------


def source_names(store_path: Any) -> dict[str, str]:
    """job id -> the local file it was made from: the encode cache's entries, else what `upload` and
    `job create` noted (cli/recent.py); a job in neither falls back to the upload's file name."""
    from pathlib import Path

    from sophon_cli.cli import recent

    path = Path(store_path)
    noted = recent.sources(path.parent)
    return {**noted, **_encode_cache_names(path)}


def _encode_cache_names(path: Any) -> dict[str, str]:
    if not path.exists() and not path.with_name(path.name + ".journal").exists():
        return {}
    try:
        from sophon_cli.state import StateStore

        entries = StateStore(path, on_warning=lambda _msg: None).load()
    except Exception:  # the cache is only a convenience here; a broken one is reported by `cache list`
        return {}
    names: dict[str, str] = {}
    for key, entry in entries.items():
        job_id = entry.get("job_id") if isinstance(entry, dict) else None
        if job_id:
            names[str(job_id)] = str(entry.get("path") or key.split("|", 1)[0])
    return names


def source_label(job: Any, sources: dict[str, str]) -> str:
    """What a person recognises as the file a job came from: the local path noted for it here,
    else the upload's file name as the server gives it, unless that name is one this tool derived
    from the content (``b78aade545f3f7d5.mp4``: an upload made on another machine, or here before
    the notes were lost), which says nothing; then ``-``. ``job create --upload ID`` notes the
    upload id for such a job (cli/job.py), so it shows that instead."""
    from sophon_cli.client.content import is_content_name

    noted = sources.get(str(get(job, "id")))
    if noted:
        return noted
    name = get(get(job, "source"), "name")
    return str(name) if name and not is_content_name(str(name)) else "-"


def list_row(job: Any, when: Any, sources: dict[str, str]) -> list[str]:
    return [
        str(get(job, "id")),
        str(get(job, "status")),
        source_label(job, sources),
        str(get(job, "profile") or ""),
        when(get(job, "created_at")),
        progress_text(job),
    ]


def list_table(out: Any, jobs: list[Any], sources: dict[str, str]) -> None:
    out.table(
        LIST_COLUMNS,
        [list_row(j, out.when, sources) for j in jobs],
        priority=LIST_PRIORITY,
        styles={1: status_style},
    )


# ---- waiting ----------------------------------------------------------------------------------------


def wait_for_jobs(app_ctx: Any, job_ids: list[str], timeout: float | None) -> list[Any]:
    """Wait for ``job_ids`` with a progress bar each; return the terminal jobs (any final status)."""
    client = app_ctx.client()
    with app_ctx.out.progress(transfer=False) as progress:
        tasks = {jid: progress.add(jid, total=100) for jid in job_ids}

        def on_progress(job: Any, *_: Any) -> None:
            task = tasks.get(get(job, "id"))
            if task is None:
                return
            if get(job, "status") == "completed":
                progress.update(task, completed=100, description=progress_description(job), eta=0)
                return
            percent = get(get(job, "progress"), "percent")
            progress.update(
                task,
                completed=percent if isinstance(percent, (int, float)) else None,
                description=progress_description(job),
                eta=job_eta(job),
            )

        finals = client.jobs.wait_many(job_ids, timeout=timeout, on_progress=on_progress)
        for job in finals:
            task = tasks.get(get(job, "id"))
            if task is not None and get(job, "status") == "completed":
                progress.done(task)
    return finals
