"""The run loop of ``sophon encode``: files ``concurrency`` at a time, and one watcher for their jobs.

A file holds a worker slot while it hashes, uploads, creates its job and later downloads; it
releases the slot while its job runs. The watcher (in the calling thread) polls every waiting job
with backoff, using one ``list`` call per tick when several jobs are waiting instead of one ``get``
per job, and hands finished jobs back to the workers.

``Pipeline.run`` handles KeyboardInterrupt: the first one stops dispatching and lets in-flight
steps stop at their next boundary (the cache is already current), then returns with
``interrupted=True``; a second one raises ``HardInterrupt`` at once. Either way ``unscored()`` names
the outputs whose scoring was cut short (kept, downloaded and verified) and ``unfinished()`` counts
the files without a result.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sophon_cli.client.errors import (
    AuthError,
    ConfigError,
    NextStep,
    NotFoundError,
    RateLimitError,
    SophonError,
    TransportError,
)
from sophon_cli.encode import steps
from sophon_cli.encode.entry import FileEntry, FileStat, Result, State
from sophon_cli.encode.events import Event, EventSink, Progress
from sophon_cli.encode.inputs import Source
from sophon_cli.encode.naming import (
    EncodeOptions,
    check_output_location,
    drop_own_outputs,
    entry_key,
    fallback_path_for,
    output_path_for,
)
from sophon_cli.encode.results import FileResult, PlanItem, RunReport, Unscored
from sophon_cli.encode.steps import Item, Wait
from sophon_cli.next_steps import Step, StepInputError
from sophon_cli.state import StateError, StateStore

__all__ = ["HardInterrupt", "JobWatcher", "Pipeline"]

POLL_START = 0.5
POLL_FACTOR = 1.5
POLL_CAP = 8.0
#: consecutive polling ticks that may fail (each after the client's own retries) before the run
#: stops with that error; the cache keeps every job, so a rerun resumes polling.
MAX_FAILED_POLLS = 5
LIST_THRESHOLD = 2  # with this many jobs waiting, one list page per tick beats N gets
LIST_PAGE_SIZE = 100
#: errors that end the whole run (every other file would hit them too): a rejected key, an
#: unreachable server, an unusable cache, job options the server refuses, and a server that keeps
#: refusing with 429 after the client's own retries (a storm: the rest would spend the same budget)
_FATAL = (AuthError, ConfigError, TransportError, StateError, steps.OptionsRejected, RateLimitError)


class HardInterrupt(BaseException):
    """A second Ctrl-C: stop at once (the cache is valid; a rerun resumes)."""


class JobWatcher:
    """The jobs files are waiting on, polled together."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.waiting: dict[str, list[Item]] = {}  # job id -> files (same content = same job)

    def add(self, job_id: str, item: Item) -> None:
        self.waiting.setdefault(job_id, []).append(item)

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def fetch_jobs(self, job_ids: list[str]) -> dict[str, Any]:
        """One polling tick: the current state of each job (None for a job the server does not know).

        With several jobs it reads newest-first ``list`` pages (one request covers up to 100 jobs) and
        only falls back to one ``get`` per job for ids those pages did not show."""
        jobs: dict[str, Any] = {}
        if len(job_ids) >= LIST_THRESHOLD:
            wanted = set(job_ids)
            cursor = None
            pages = max(1, -(-len(job_ids) // LIST_PAGE_SIZE)) + 1
            for _ in range(pages):
                page = self.client.jobs.list(limit=LIST_PAGE_SIZE, cursor=cursor)
                for job in page.jobs:
                    if job.id in wanted:
                        jobs[job.id] = job
                cursor = page.next_cursor
                if len(jobs) == len(wanted) or not cursor or page.has_more is False or not page.jobs:
                    break
        for job_id in job_ids:
            if job_id not in jobs:
                try:
                    jobs[job_id] = self.client.jobs.get(job_id)
                except NotFoundError:
                    jobs[job_id] = None
        return jobs


class Pipeline:
    """Runs a batch. ``server_id`` names the API server in cache keys (so entries made against one
    server are never resumed against another); it defaults to ``client.base_url``."""

    def __init__(
        self,
        client: Any,
        store: StateStore,
        options: EncodeOptions,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        server_id: str | None = None,
    ) -> None:
        if server_id is None:
            server_id = getattr(client, "base_url", None)
        self.client = client
        self.store = store
        self.options = options
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._fatal: BaseException | None = None
        self.ctx = steps.Context(
            client=client,
            store=store,
            options=options,
            fingerprint=options.fingerprint(server=server_id),
            sink=EventSink(on_event, on_progress),
            run_id=uuid.uuid4().hex,
            stop=self._stop,
        )
        self.watcher = JobWatcher(client)
        self.report: RunReport | None = None  # the last run's report (also when it raised)
        self._items: list[Item] = []
        self._results: dict[str, FileResult] = {}

    # -- public ----------------------------------------------------------------------------------

    def prepare(self, sources: Sequence[Source]) -> list[Item]:
        """Pair sources with their cache entries and outputs; reject output collisions.

        An input that is another input's output (a rerun whose glob matches the results of the
        first run) is left out (``drop_own_outputs`` says which and why).
        """
        entries = self.store.entries()
        kept, _ = drop_own_outputs(sources, self.options)
        items: list[Item] = []
        by_output: dict[Path, Source] = {}
        digests = _digest_index(entries.values())
        for s in kept:
            out = output_path_for(s, self.options)
            if out == s.path or fallback_path_for(out, s.path) == s.path:
                raise StepInputError(
                    f"the output of {s.display} would overwrite it",
                    step=Step.OTHER_OUTPUT_NAME,
                    hint="pick another name template or output directory",
                )
            if out in by_output:
                raise StepInputError(
                    f"{by_output[out].display} and {s.display} would both be written to {out}",
                    step=Step.KEEP_LAYOUT,
                    hint="use an output directory with the directory layout kept, or a name template with {name}",
                )
            by_output[out] = s
            check_output_location(out, s.display)
            check_output_location(fallback_path_for(out, s.path), s.display)
            st = FileStat.of(s.path.stat())
            key = entry_key(s.path, st.size, st.mtime_ns, self.ctx.fingerprint, out)
            entry = FileEntry.from_dict(entries.get(key))
            previous: dict[str, tuple[str, ...]] = {}
            if entry.path is not None and not entry.same_file(st) and self.client is not None:
                # Rewritten with its size and mtime put back (cp -p, rsync -t): nothing recorded
                # of it holds. Start over; the deterministic keys still find what is on the server.
                # What it wrote stays ours to replace.
                if entry.output:
                    previous[entry.output] = tuple(
                        x for x in (entry.written_sha256, entry.output_sha256, entry.sha256) if x
                    )
                entry = FileEntry(nonce=entry.nonce, force_run=entry.force_run)
                self.store.delete(key)
            known = digests.get(st.digest_key())
            if known is not None and known[2] != st.ctime_ns:
                known = None
            known_digests = known[:2] if known else None
            items.append(
                Item(s, key, out, st.size, entry, stat=st, known=known_digests, previous_outputs=previous)
            )
        return items

    def plan(self, sources: Sequence[Source]) -> list[PlanItem]:
        """What ``run`` would do per file, from the local cache only (no request at all)."""
        plan = []
        for item in self.prepare(sources):
            e = item.entry
            out = str(item.output)
            name = item.source.display
            if self.options.force:
                plan.append(PlanItem(name, "upload", out, "forced: a fresh job"))
            elif steps.is_done(self.ctx, item):
                plan.append(PlanItem(name, "skip", e.output or out, "already done"))
            elif e.job_id:
                action = "download" if e.job_status == "completed" else "reuse job"
                plan.append(PlanItem(name, action, out, e.job_id))
            elif e.upload_id and e.state == State.UPLOADED:
                plan.append(PlanItem(name, "reuse upload", out, e.upload_id))
            elif e.upload_id:
                plan.append(PlanItem(name, "resume upload", out, e.upload_id))
            else:
                plan.append(PlanItem(name, "upload", out, None))
        return plan

    def unscored(self) -> list[Unscored]:
        """Outputs downloaded but not yet scored because a stop caught their scoring (also
        while a second Ctrl-C unwinds, before any report exists): kept, the rerun scores them."""
        return [u for key, u in list(self.ctx.unscored.items()) if key not in self._results]

    def unfinished(self) -> int:
        """Files of the current (or last) run without a result yet."""
        return sum(1 for item in self._items if item.key not in self._results)

    def stop(self) -> None:
        """Stop dispatching; in-flight steps stop at their next boundary."""
        self._stop.set()
        self._wake.set()

    def preflight(self) -> None:
        """One cheap authenticated request before any file is read or sent, so a rejected key or
        an unreachable server ends the run at once (and not after hashing every file)."""
        self.client.jobs.list(limit=1)

    def run(self, sources: Sequence[Source]) -> RunReport:
        self.ctx.sink.error = None
        items = self.prepare(sources)
        if self.options.force or not all(steps.is_done(self.ctx, i) for i in items):
            self.preflight()  # a batch that is all done sends nothing at all
        results: dict[str, FileResult] = {}
        self._items, self._results = items, results
        pending: deque[Item] = deque(items)
        ready: deque[Item] = deque()  # jobs done, waiting for a slot to download
        watcher = self.watcher
        running: dict[Future[Any], Item] = {}
        interval = POLL_START
        failed_polls = 0
        next_poll = 0.0
        executor = ThreadPoolExecutor(
            max_workers=self.options.concurrency, thread_name_prefix="sophon-encode"
        )
        interrupted = False
        try:
            try:
                while True:
                    self._wake.clear()
                    # collect finished workers
                    for fut in [f for f in running if f.done()]:
                        item = running.pop(fut)
                        outcome = self._outcome(fut, item)
                        if isinstance(outcome, Wait):
                            watcher.add(outcome.job_id, item)
                            item.waited_since = self.clock()
                            interval, next_poll = POLL_START, self.clock() + POLL_START
                        elif isinstance(outcome, FileResult):
                            results[item.key] = outcome
                    if self._fatal is not None:
                        self._stop.set()
                    # dispatch
                    while (
                        not self._stop.is_set()
                        and len(running) < self.options.concurrency
                        and (ready or pending)
                    ):
                        item = ready.popleft() if ready else pending.popleft()
                        fut = executor.submit(steps.advance, self.ctx, item)
                        fut.add_done_callback(lambda _f: self._wake.set())
                        running[fut] = item
                    # poll jobs
                    now = self.clock()
                    if watcher and now >= next_poll and not self._stop.is_set():
                        try:
                            changed = self._poll(ready, results)
                            failed_polls = 0
                        except _FATAL as exc:
                            self._fatal, changed = exc, False
                        except SophonError as exc:
                            # a bad tick (after the client's retries): back off and try again, a
                            # bounded number of times in a row
                            changed = False
                            failed_polls += 1
                            if failed_polls >= MAX_FAILED_POLLS:
                                self._fatal = exc
                                self._stop.set()
                        interval = POLL_START if changed else min(POLL_CAP, interval * POLL_FACTOR)
                        next_poll = self.clock() + interval
                    if not running and (self._stop.is_set() or (not pending and not ready and not watcher)):
                        break
                    if (
                        (ready or pending)
                        and len(running) < self.options.concurrency
                        and not self._stop.is_set()
                    ):
                        continue  # a poll just made work ready: dispatch it now
                    timeout = 1.0
                    if watcher:
                        timeout = max(0.0, min(timeout, next_poll - self.clock()))
                    self._wake.wait(timeout)
            except KeyboardInterrupt:
                # First Ctrl-C: stop dispatching; in-flight steps stop at their next boundary
                # (every finished step is already in the cache). A second one stops at once.
                interrupted = True
                self.stop()
                try:
                    while any(not f.done() for f in running):
                        time.sleep(0.05)
                except KeyboardInterrupt:
                    raise HardInterrupt() from None
        finally:
            executor.shutdown(wait=not interrupted, cancel_futures=True)
        ordered: list[FileResult] = []
        for item in items:
            r = results.get(item.key)
            if r is None:
                if not interrupted and not self._stop.is_set():  # pragma: no cover - defensive
                    r = FileResult(item.source.display, Result.FAILED, "not processed", str(item.output))
                else:
                    continue
            ordered.append(r)
        self.report = RunReport(
            ordered,
            # a stop from outside (``stop()``) interrupts only a run it cut short
            interrupted=interrupted
            or (self._stop.is_set() and self._fatal is None and len(ordered) < len(items)),
            ctrl_c=interrupted,
            unfinished=len(items) - len(ordered),
            error=self._fatal,
            display_error=self.ctx.sink.error,
            unscored=self.unscored(),
        )
        if self._fatal is not None:
            # The run stopped on an error every other file would hit too; ``self.report`` keeps
            # what finished before it (a front end shows it, then the error).
            raise self._fatal
        return self.report

    # -- internals -------------------------------------------------------------------------------

    def _outcome(self, fut: Future[Any], item: Item) -> FileResult | Wait | None:
        try:
            return fut.result()
        except steps.Stopped:
            return None
        except _FATAL as exc:
            if self._fatal is None:
                self._fatal = exc
            return None
        except (SophonError, OSError) as exc:
            return steps.fail(self.ctx, item, steps.failure_reason(exc))

    def _poll(self, ready: deque[Item], results: dict[str, FileResult]) -> bool:
        """One tick: refresh every watched job; move terminal ones to ``ready``. True if anything
        changed (which resets the backoff)."""
        watched = self.watcher.waiting
        jobs = self.watcher.fetch_jobs(list(watched))
        changed = False
        now = self.clock()
        timeout = self.options.timeout
        for job_id, job in jobs.items():
            for item in watched.pop(job_id):
                if job is None:
                    reason = f"job {job_id} does not exist on this server"
                    results[item.key] = steps.fail(self.ctx, item, reason, next_step=NextStep.FRESH_JOB)
                    changed = True
                    continue
                changed = steps.observe(self.ctx, item, job) or changed
                if job.is_terminal:
                    ready.append(item)
                    changed = True
                elif timeout is not None and now - (item.waited_since or now) >= timeout:
                    results[item.key] = steps.fail_timeout(self.ctx, item, job)
                else:
                    watched.setdefault(job_id, []).append(item)
        return changed


def _digest_index(entries: Any) -> dict[tuple[int, int, int, int], tuple[str, str | None, int]]:
    """(device, inode, size, mtime_ns) -> (sha256, content fingerprint, ctime_ns) of every entry
    that recorded them: a file met again under another intent (a new ``-o``, template or option)
    finds its upload session without being read."""
    index: dict[tuple[int, int, int, int], tuple[str, str | None, int]] = {}
    for raw in entries:
        e = FileEntry.from_dict(raw)
        if e.sha256 and e.inode is not None and e.ctime_ns is not None and e.size is not None:
            index[(e.device or 0, e.inode, e.size, e.mtime_ns or 0)] = (
                e.sha256,
                e.content_fingerprint,
                e.ctime_ns,
            )
    return index
