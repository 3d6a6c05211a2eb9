"""Jobs: create / get / list / iter / cancel / wait / wait_many.

``wait`` and ``wait_many`` return the jobs once they are terminal, whatever the outcome
(completed, failed or canceled): the caller decides what a failure means. They raise
WaitTimeoutError only when ``timeout`` passes first. Polling backs off from 0.5 s by 1.5x up to 5 s.

``wait_many`` polls efficiently: with several jobs pending it reads newest-first ``list`` pages once
per tick (stopping when every pending id was seen or the pages are older than the oldest pending
job) instead of one ``get`` per job, and falls back to ``get`` for ids the pages did not show.

``on_progress(job)`` receives the Job model after every poll.

:meth:`Jobs.poll` is the one poller: one round of status reads for a set of ids. ``wait_many`` and
the encode scheduler both call it; :data:`TERMINAL_STATUSES` is the one definition of "finished".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sophon_cli.client.errors import ConflictError, InputError, NextStep, WaitTimeoutError

if TYPE_CHECKING:  # pragma: no cover
    from sophon_cli.client.http import SophonClient
    from sophon_cli.client.models import Job, JobList

#: the statuses after which a job never changes again (the one definition in the client library)
TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled"})
MIN_TARGET_HEIGHT = 144
MAX_TARGET_HEIGHT = 4320
MAX_METADATA_BYTES = 16 * 1024
POLL_START = 0.5
POLL_FACTOR = 1.5
POLL_CAP = 5.0
LIST_THRESHOLD = 3  # wait_many uses list pages when at least this many jobs are pending
LIST_PAGE_SIZE = 100
LIST_MAX_PAGES = 5

JobCallback = Callable[["Job"], None]


def is_terminal(status: str | None) -> bool:
    """True for ``completed``, ``failed`` and ``canceled``."""
    return status in TERMINAL_STATUSES


def validate_target_height(target_height: Any) -> int | None:
    if target_height is None:
        return None
    if isinstance(target_height, bool) or not isinstance(target_height, int):
        raise InputError(
            f"target height must be a whole number of pixels, got {target_height!r}",
            hint=f"pass a height between {MIN_TARGET_HEIGHT} and {MAX_TARGET_HEIGHT}",
        )
    if not MIN_TARGET_HEIGHT <= target_height <= MAX_TARGET_HEIGHT:
        raise InputError(
            f"target height {target_height} is out of range",
            hint=f"pass a height between {MIN_TARGET_HEIGHT} and {MAX_TARGET_HEIGHT}",
        )
    return target_height


def validate_metadata(metadata: Any) -> dict[str, Any] | None:
    """Metadata must be a JSON object whose compact serialisation is at most 16 KiB."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InputError(
            f"metadata must be a JSON object, got {type(metadata).__name__}",
            hint='pass an object such as {"key": "value"}',
        )
    try:
        encoded = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"metadata is not valid JSON ({exc})",
            hint="use only strings, numbers, booleans, lists and objects",
        ) from None
    size = len(encoded.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise InputError(
            f"metadata is {size} bytes serialised; the limit is {MAX_METADATA_BYTES}",
            hint="shrink the metadata object",
        )
    return metadata


def next_poll_interval(current: float) -> float:
    return min(POLL_CAP, current * POLL_FACTOR)


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 text -> aware datetime (None when absent or unparseable)."""
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.10's fromisoformat takes only 3 or 6 fractional digits
    text = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _q(value: str) -> str:
    return quote(str(value), safe="")


class Jobs:
    def __init__(self, client: SophonClient) -> None:
        self._c = client

    def create(self, upload_id: str, *, idempotency_key: str | None = None, **options: Any) -> Job:
        """Create a job from a completed upload. ``options`` are those of :func:`build_job_request`
        (profile, container, audio, target_height, webhook_ids, metadata); they are validated
        locally before any request."""
        from sophon_cli.client.models import Job, parse_model

        body = build_job_request(upload_id, **options)
        response = self._c.request(
            "POST", "/v1/jobs", json=body, idempotency_key=idempotency_key, expect=(200, 201)
        )
        job = parse_model(Job, response)
        job._replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return job

    def get(self, job_id: str) -> Job:
        from sophon_cli.client.models import Job, parse_model

        return parse_model(Job, self._c.request("GET", f"/v1/jobs/{_q(job_id)}"))

    def cancel(self, job_id: str) -> Job:
        """Cancel a non-terminal job and return it. A 409 ``job_not_cancelable`` is raised as
        ConflictError, except when it only happened because a retried cancel had already worked."""
        from sophon_cli.client.models import Job, parse_model

        try:
            return parse_model(Job, self._c.request("DELETE", f"/v1/jobs/{_q(job_id)}"))
        except ConflictError as exc:
            if exc.attempts > 1:
                job = self.get(job_id)
                if job.status == "canceled":
                    return job
            raise

    def list(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobList:
        from sophon_cli.client.models import JobList, parse_model

        params = {"status": status, "limit": limit, "cursor": cursor}
        return parse_model(JobList, self._c.request("GET", "/v1/jobs", params=params))

    def pages(
        self, *, status: str | None = None, page_size: int = 100, max_pages: int | None = None
    ) -> Iterator[JobList]:
        """Newest-first pages of jobs, following ``next_cursor`` until the last page (or
        ``max_pages``); a cursor seen before ends the walk (a server that loops)."""
        cursor: str | None = None
        seen_cursors: set[str] = set()
        count = 0
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor)
            yield page
            count += 1
            cursor = page.next_cursor
            if not cursor or page.has_more is False or not page.jobs or cursor in seen_cursors:
                return
            if max_pages is not None and count >= max_pages:
                return
            seen_cursors.add(cursor)

    def iter(self, *, status: str | None = None, page_size: int = 100) -> Iterator[Job]:
        """Every job (newest first), following ``next_cursor`` across pages."""
        for page in self.pages(status=status, page_size=page_size):
            yield from page.jobs

    # -- waiting ---------------------------------------------------------------------------------

    def wait(
        self, job_id: str, *, timeout: float | None = None, on_progress: JobCallback | None = None
    ) -> Job:
        """Poll until the job is terminal and return it (failed/canceled are returned, not raised)."""
        return self.wait_many([job_id], timeout=timeout, on_progress=on_progress)[0]

    def wait_many(
        self,
        job_ids: Iterable[str],
        *,
        timeout: float | None = None,
        on_progress: JobCallback | None = None,
    ) -> list[Job]:
        """Poll until every job is terminal; return them in the order of ``job_ids``."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return []
        clock, sleep = self._c.clock, self._c.sleep
        deadline = None if timeout is None else clock() + max(0.0, timeout)
        latest: dict[str, Job] = {}
        interval = POLL_START
        while True:
            pending = [i for i in ids if i not in latest or not latest[i].is_terminal]
            for job in self.poll(pending, latest):
                latest[job.id] = job
                if on_progress is not None:
                    on_progress(job)
            pending = [i for i in ids if not latest[i].is_terminal]
            if not pending:
                return [latest[i] for i in ids]
            now = clock()
            if deadline is not None and now >= deadline:
                states = ", ".join(f"{i} {latest[i].status}" for i in pending[:5])
                more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
                raise WaitTimeoutError(
                    f"gave up waiting after {timeout:g}s: {states}{more}",
                    job_ids=pending,
                    hint="wait again, with a longer timeout",
                    next_step=NextStep.WAIT_AGAIN,
                )
            delay = interval if deadline is None else min(interval, max(0.0, deadline - now))
            sleep(delay)
            interval = next_poll_interval(interval)

    def poll(self, job_ids: Iterable[str], known: Mapping[str, Job] | None = None) -> list[Job]:
        """One round of status reads: the current Job of every id in ``job_ids``, in that order.

        This is the one poller of the library (``wait_many`` and the encode scheduler call it once
        per tick and decide themselves how long to sleep and when to give up). With fewer than
        :data:`LIST_THRESHOLD` ids it makes one ``GET /v1/jobs/{id}`` each; with more it reads
        newest-first list pages (at most :data:`LIST_MAX_PAGES` of :data:`LIST_PAGE_SIZE`),
        stopping once every id was seen or, when ``known`` holds an earlier Job of every id, once
        the pages are older than the oldest of them; ids the pages did not show get a ``get``.

        ``known`` maps ids to the Job seen at the previous tick (used only for its ``created_at``).
        Errors are raised as they come (after the client's retries): NotFoundError for an id the
        server does not know, TransportError when it cannot be reached.
        """
        pending = list(dict.fromkeys(job_ids))
        known = known or {}
        if len(pending) < LIST_THRESHOLD:
            return [self.get(i) for i in pending]
        wanted = set(pending)
        found: dict[str, Job] = {}
        known_times = [parse_time(known[i].created_at) for i in pending if i in known]
        oldest = min((t for t in known_times if t is not None), default=None)
        if len(known_times) < len(pending):
            oldest = None  # some ids never seen yet: their age is unknown
        for page in self.pages(page_size=LIST_PAGE_SIZE, max_pages=LIST_MAX_PAGES):
            for job in page.jobs:
                if job.id in wanted:
                    found[job.id] = job
            if len(found) == len(wanted) or not page.jobs:
                break
            last = parse_time(page.jobs[-1].created_at)
            if oldest is not None and last is not None and last < oldest:
                break
        for job_id in pending:
            if job_id not in found:
                found[job_id] = self.get(job_id)
        return [found[i] for i in pending]


def build_job_request(
    upload_id: str,
    *,
    profile: str = "sophon-auto",
    container: str | None = None,
    audio: bool | None = None,
    target_height: int | None = None,
    webhook_ids: Iterable[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The CreateJobRequest body (validated locally). Also what a job's intent key should hash."""
    if not upload_id:
        raise InputError("an upload id is required to create a job", hint="upload the file first")
    target_height = validate_target_height(target_height)
    metadata = validate_metadata(metadata)
    body: dict[str, Any] = {"source": {"type": "upload", "upload_id": upload_id}, "profile": profile}
    output: dict[str, Any] = {}
    if container is not None:
        output["container"] = container
    if audio is not None:
        output["audio"] = bool(audio)
    if target_height is not None:
        output["target_height"] = target_height
    if output:
        body["output"] = output
    if webhook_ids:
        body["webhook_ids"] = list(webhook_ids)
    if metadata is not None:
        body["metadata"] = metadata
    return body
