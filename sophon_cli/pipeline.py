"""The batch pipeline behind ``sophon encode``: one persisted state machine per file.

Each file walks these states, and every step is written to the local cache (``state.StateStore``)
before the next one begins::

    pending -> hashed -> uploading -> uploaded -> job_created -> job_done -> downloaded -> done
                 (sha256)  (upload_id,   (upload     (job_id)      (terminal    (verified
                            saved before  complete)                  job facts)   output)
                            any part)

``failed`` marks a file that ended in error (a rerun retries it from the step it reached).

A rerun skips ``done`` files and resumes the others where they stopped. Server-side duplicates are
avoided even without the cache: the upload's Idempotency-Key comes from the content hash, size and
name (see ``client.idempotency``) and the job's from the content hash + the (deterministic) upload
id + the job options (+ a nonce stored in the entry when ``--force`` asked for a fresh job), so a
replayed POST returns the original session or job. ``--force`` makes a fresh *job*; the bytes the
server already holds are reused (a new upload would only cost bandwidth). Cache entries are keyed
by absolute path + size + mtime + a fingerprint of the job options and the server.

Files are processed ``concurrency`` at a time (each upload also sends parts in parallel). A file
releases its slot while its job runs: one watcher in the calling thread polls every waiting job,
with backoff, using one ``list`` call per tick when several jobs are waiting instead of one ``get``
per job. Outputs only ever appear complete at their path: the download goes to ``.part`` and is
renamed after verification, and a fallback copy of the original goes through a temp file + rename.

Fallback (the encode is an enhancement, the original is never lost): with ``copy``, a failed or
canceled job, a source the server rejected, a ``final_artifact: "original"`` result or an output
larger than its source puts a copy of the original at the output path (with the source's
extension); ``skip`` leaves nothing there; ``fail`` makes the file an error.

The pipeline never prints: it reports through ``on_event(Event)`` (one per state change) and
``on_progress(file, phase, done, total)``. ``Pipeline.run`` handles KeyboardInterrupt: the first one
stops dispatching and lets in-flight steps stop at their next boundary (the cache is already
current), then returns with ``interrupted=True``; a second one raises ``HardInterrupt`` at once.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sophon_cli.client.errors import (
    APIError,
    AuthError,
    BadRequestError,
    ConfigError,
    ConflictError,
    InputError,
    NotFoundError,
    SophonError,
    TransportError,
)
from sophon_cli.state import StateError, StateStore

__all__ = [
    "VIDEO_EXTENSIONS",
    "EncodeOptions",
    "Event",
    "FileResult",
    "HardInterrupt",
    "Pipeline",
    "PlanItem",
    "RunReport",
    "Source",
    "drop_own_outputs",
    "entry_key",
    "expand_inputs",
    "output_path_for",
    "parse_shard",
    "select_shard",
]

VIDEO_EXTENSIONS = frozenset(
    {
        ".3g2",
        ".3gp",
        ".asf",
        ".avi",
        ".dv",
        ".f4v",
        ".flv",
        ".h264",
        ".h265",
        ".hevc",
        ".m2t",
        ".m2ts",
        ".m2v",
        ".m4v",
        ".mkv",
        ".mov",
        ".mp4",
        ".mpeg",
        ".mpg",
        ".mts",
        ".mxf",
        ".ogv",
        ".qt",
        ".ts",
        ".vob",
        ".webm",
        ".wmv",
        ".y4m",
    }
)
FALLBACKS = ("copy", "skip", "fail")
CONTAINERS = ("mp4", "mkv")
DEFAULT_TEMPLATE = "{stem}.sophon.{ext}"
TEMPLATE_FIELDS = ("stem", "ext", "name", "suffix", "profile")

# Entry states, in order.
STATES = ("pending", "hashed", "uploading", "uploaded", "job_created", "job_done", "downloaded", "done")
# Results shown in the summary.
ENCODED, ORIGINAL_KEPT, SKIPPED, FAILED = "encoded", "original kept", "skipped", "failed"

POLL_START = 0.5
POLL_FACTOR = 1.5
POLL_CAP = 8.0
#: consecutive polling ticks that may fail (each after the client's own retries) before the run
#: stops with that error; the cache keeps every job, so a rerun resumes polling.
MAX_FAILED_POLLS = 5
LIST_THRESHOLD = 2  # with this many jobs waiting, one list page per tick beats N gets
LIST_PAGE_SIZE = 100
_FATAL = (AuthError, ConfigError, TransportError, StateError)


# -- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One input file. ``base`` is the directory outputs are laid out relative to (the directory
    argument, the fixed part of a glob, or the file's own directory)."""

    path: Path
    base: Path
    display: str


def _display(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def _is_candidate(path: Path) -> bool:
    name = path.name
    return not name.startswith(".") and not name.endswith((".part", ".tmp"))


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def expand_inputs(
    patterns: Sequence[str], *, recursive: bool = False, cwd: str | os.PathLike[str] | None = None
) -> tuple[list[Source], list[str]]:
    """Expand files, directories (with ``recursive``) and globs (``**`` included) ourselves, so a
    quoted pattern works where no shell expands it. Returns (videos, ignored non-video files).

    Duplicates are removed (first occurrence wins). A pattern that matches nothing raises
    InputError naming it; so does a directory without ``recursive``.
    """
    root = Path(cwd) if cwd is not None else Path.cwd()
    seen: set[str] = set()
    videos: list[Source] = []
    ignored: list[str] = []

    def add(path: Path, base: Path) -> None:
        absolute = Path(os.path.abspath(root / path))
        real = os.path.realpath(absolute)
        if real in seen:
            return
        seen.add(real)
        if absolute.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(Source(absolute, Path(os.path.abspath(root / base)), _display(absolute, root)))
        else:
            ignored.append(_display(absolute, root))

    def walk(directory: Path, base: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(root / directory):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if _is_candidate(p):
                    add(p, base)

    for pattern in patterns:
        if not pattern:
            raise InputError("an empty input pattern was given", hint="pass files, directories or globs")
        expanded = os.path.expanduser(pattern)
        target = root / expanded
        if glob.has_magic(expanded) and not target.exists():
            base = _glob_base(expanded)
            matches = sorted(glob.glob(str(target), recursive=True))
            found = False
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    if recursive:
                        walk(mp, mp)
                        found = True
                    continue
                if mp.is_file() and _is_candidate(mp):
                    add(mp, base)
                    found = True
            if not found:
                raise InputError(
                    f"no files match {pattern!r}",
                    hint="check the pattern (quote it so the shell does not expand it; ** needs no --recursive)",
                )
        elif target.is_dir():
            if not recursive:
                raise InputError(
                    f"{pattern} is a directory", hint="pass --recursive to encode the videos inside it"
                )
            walk(Path(expanded), Path(expanded))
        elif target.is_file():
            add(Path(expanded), Path(expanded).parent)
        else:
            raise InputError(f"no such file: {pattern}", hint="check the path or the glob pattern")
    return videos, ignored


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N) -> (I, N)."""
    if not text:
        return None
    try:
        left, right = text.split("/", 1)
        index, count = int(left), int(right)
    except ValueError:
        raise InputError(
            f"bad --shard {text!r}", hint="use I/N, e.g. --shard 1/4 (I counts from 1)"
        ) from None
    if count < 1 or not 1 <= index <= count:
        raise InputError(f"bad --shard {text!r}", hint="use I/N with 1 <= I <= N, e.g. --shard 2/4")
    return index, count


def shard_of(path_key: str, count: int) -> int:
    """The 1-based shard a path belongs to: stable across runs, machines and Python versions."""
    digest = hashlib.sha256(path_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def select_shard(sources: Iterable[Source], index: int, count: int) -> list[Source]:
    """The sources of shard ``index`` of ``count``, keyed on the path as displayed (relative to the
    working directory when inside it), so CI jobs in differently-named checkouts agree."""
    return [s for s in sources if shard_of(s.display.replace(os.sep, "/"), count) == index]


# -- options, keys, paths ------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeOptions:
    profile: str = "sophon-auto"
    container: str | None = None
    audio: bool | None = None
    height: int | None = None
    webhook_ids: tuple[str, ...] = ()
    metadata: tuple[tuple[str, Any], ...] = ()
    output_dir: Path | None = None
    name_template: str = DEFAULT_TEMPLATE
    concurrency: int = 2
    part_concurrency: int = 4
    fallback: str = "copy"
    force: bool = False
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise InputError(f"unknown --fallback {self.fallback!r}", hint="use copy, skip or fail")
        if self.container is not None and self.container not in CONTAINERS:
            raise InputError(f"unknown --container {self.container!r}", hint="use mp4 or mkv")
        if self.concurrency < 1:
            raise InputError("--concurrency must be at least 1", hint="pass e.g. --concurrency 2")
        check_template(self.name_template, self.profile)

    def job_options(self) -> dict[str, Any]:
        """Everything that shapes the job request besides the upload id."""
        return {
            "profile": self.profile,
            "container": self.container,
            "audio": self.audio,
            "target_height": self.height,
            "webhook_ids": list(self.webhook_ids) or None,
            "metadata": dict(self.metadata) or None,
        }

    def fingerprint(self, server: str | None = None) -> str:
        """Identifies the job options (and the server) in cache keys."""
        from sophon_cli.client.idempotency import canonical_json

        data = {"options": self.job_options(), "server": server}
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]


def _field_value(value: str) -> str:
    """A template field's value may never add a directory level or a control character."""
    return "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in value)


def render_name(template: str, *, stem: str, ext: str, name: str, suffix: str, profile: str) -> str:
    """Fill ``--name-template``; raise InputError unless the result is a safe relative file name."""
    fields = {"stem": stem, "ext": ext, "name": name, "suffix": suffix, "profile": profile}
    try:
        result = template.format(**{k: _field_value(v) for k, v in fields.items()})
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"bad --name-template {template!r} ({exc})",
            hint="use the fields {" + "}, {".join(TEMPLATE_FIELDS) + "}",
        ) from None
    components = result.replace("\\", "/").split("/")
    if (
        not result
        or os.path.isabs(result)
        or any(c in ("", ".", "..") for c in components)
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in result)
    ):
        raise InputError(
            f"bad --name-template {template!r}: it gives {result!r}",
            hint="it must give a relative file name without '..' or control characters, e.g. {stem}.sophon.{ext}",
        )
    return result


def check_template(template: str, profile: str = "sophon-auto") -> None:
    render_name(template, stem="x", ext="mp4", name="x.mov", suffix="mov", profile=profile)


def output_path_for(source: Source, options: EncodeOptions) -> Path:
    p = source.path
    name = render_name(
        options.name_template,
        stem=p.stem,
        ext=options.container or "mp4",
        name=p.name,
        suffix=p.suffix.lstrip("."),
        profile=options.profile,
    )
    if options.output_dir is None:
        return p.parent / name
    try:
        rel = p.parent.relative_to(source.base)
    except ValueError:
        rel = Path()
    return Path(os.path.abspath(options.output_dir)) / rel / name


def drop_own_outputs(
    sources: Sequence[Source], options: EncodeOptions
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Leave out inputs that are another input's output or fallback copy (a rerun whose glob
    matches the first run's results). Returns (kept, [(file, reason), ...])."""
    produced: dict[Path, Source] = {}
    for s in sources:
        out = output_path_for(s, options)
        produced.setdefault(out, s)
        produced.setdefault(fallback_path_for(out, s.path), s)
    kept: list[Source] = []
    dropped: list[tuple[str, str]] = []
    for s in sources:
        origin = produced.get(s.path)
        if origin is not None and origin.path != s.path:
            dropped.append((s.display, f"it is the output of {origin.display}"))
        else:
            kept.append(s)
    return kept, dropped


def fallback_path_for(output: Path, source: Path) -> Path:
    """Where a copy of the original goes: the output path with the source's extension."""
    if output.suffix.lower() == source.suffix.lower():
        return output
    return output.with_suffix(source.suffix)


def entry_key(path: Path, size: int, mtime_ns: int, fingerprint: str) -> str:
    return f"{path}|{size}|{mtime_ns}|{fingerprint}"


def job_idempotency_key(
    sha256: str, size: int, upload_id: str, options: EncodeOptions, nonce: str | None
) -> str:
    """The create-job key of one file's intent: its content, its upload (itself deterministic from
    the content and name, so the same after the cache is lost), the job options and the nonce."""
    from sophon_cli.client.idempotency import intent_key, route_key

    base = intent_key(
        "encode-job",
        sha256=sha256,
        size=size,
        upload_id=upload_id,
        options=options.job_options(),
        nonce=nonce,
    )
    return route_key(base, "create-job")


# -- events and results --------------------------------------------------------------------------


@dataclass
class Event:
    """One state change of one file. ``detail`` holds plain JSON-able facts (never secrets)."""

    file: str
    state: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"event": "state", "file": self.file, "state": self.state, **self.detail}


@dataclass
class FileResult:
    file: str
    result: str  # encoded | original kept | skipped | failed
    reason: str | None = None
    output: str | None = None
    source_bytes: int | None = None
    output_bytes: int | None = None
    saved_percent: float | None = None
    profile: str | None = None
    effective_profile: str | None = None
    job_id: str | None = None
    upload_id: str | None = None
    cached: bool = False
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PlanItem:
    file: str
    action: str  # upload | resume upload | reuse upload | reuse job | download | skip
    output: str
    reason: str | None = None


@dataclass
class RunReport:
    results: list[FileResult]
    interrupted: bool = False

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.result == FAILED]


class HardInterrupt(BaseException):
    """A second Ctrl-C: stop at once (the cache is valid; a rerun resumes)."""


class _Stopped(Exception):
    """Raised inside a worker (or from a progress callback) once a stop was requested."""


class _Watch(Exception):
    """Internal: the file now waits on its job."""


@dataclass
class _Item:
    source: Source
    key: str
    output: Path
    size: int
    entry: dict[str, Any]
    job: Any = None
    waited_since: float | None = None


# -- the pipeline --------------------------------------------------------------------------------


class Pipeline:
    def __init__(
        self,
        client: Any,
        store: StateStore,
        options: EncodeOptions,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_progress: Callable[[str, str, float, float | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        server_id: str | None = None,
    ) -> None:
        """``server_id`` names the API server in cache keys (so entries made against one server are
        never resumed against another); it defaults to ``client.base_url``."""
        self.client = client
        self.store = store
        self.options = options
        self.on_event = on_event
        self.on_progress = on_progress
        self.clock = clock
        if server_id is None:
            server_id = getattr(client, "base_url", None)
        self.fingerprint = options.fingerprint(server=server_id)
        self.run_id = uuid.uuid4().hex
        self.excluded: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._emit_lock = threading.Lock()
        self._fatal: BaseException | None = None
        self.requests_saved = 0  # gets avoided by list polling (for the curious)

    # -- public ----------------------------------------------------------------------------------

    def prepare(self, sources: Sequence[Source]) -> list[_Item]:
        """Pair sources with their cache entries and outputs; reject output collisions.

        An input that is another input's output (a rerun whose glob matches the results of the
        first run) is left out and listed in ``self.excluded`` as (file, reason).
        """
        entries = self.store.entries()
        kept, self.excluded = drop_own_outputs(sources, self.options)
        items: list[_Item] = []
        by_output: dict[Path, Source] = {}
        for s in kept:
            out = output_path_for(s, self.options)
            if out == s.path or fallback_path_for(out, s.path) == s.path:
                raise InputError(
                    f"the output of {s.display} would overwrite it",
                    hint="pick another --name-template or -o directory",
                )
            if out in by_output:
                raise InputError(
                    f"{by_output[out].display} and {s.display} would both be written to {out}",
                    hint="use -o with the directory layout kept, or a --name-template with {name}",
                )
            by_output[out] = s
            st = s.path.stat()
            key = entry_key(s.path, st.st_size, st.st_mtime_ns, self.fingerprint)
            entry = dict(entries.get(key) or {})
            items.append(_Item(s, key, out, st.st_size, entry))
        return items

    def plan(self, sources: Sequence[Source]) -> list[PlanItem]:
        """What ``run`` would do per file, from the local cache only (no request at all)."""
        plan = []
        for item in self.prepare(sources):
            e = item.entry
            out = str(item.output)
            if self.options.force:
                plan.append(PlanItem(item.source.display, "upload", out, "--force: a fresh job"))
            elif self._is_done(item):
                plan.append(PlanItem(item.source.display, "skip", e.get("output") or out, "already done"))
            elif e.get("job_id"):
                action = "download" if e.get("job_status") == "completed" else "reuse job"
                plan.append(PlanItem(item.source.display, action, out, e["job_id"]))
            elif e.get("upload_id") and e.get("state") == "uploaded":
                plan.append(PlanItem(item.source.display, "reuse upload", out, e["upload_id"]))
            elif e.get("upload_id"):
                plan.append(PlanItem(item.source.display, "resume upload", out, e["upload_id"]))
            else:
                plan.append(PlanItem(item.source.display, "upload", out, None))
        return plan

    def stop(self) -> None:
        """Stop dispatching; in-flight steps stop at their next boundary."""
        self._stop.set()
        self._wake.set()

    def run(self, sources: Sequence[Source]) -> RunReport:
        items = self.prepare(sources)
        results: dict[str, FileResult] = {}
        pending: deque[_Item] = deque(items)
        ready: deque[_Item] = deque()  # jobs done, waiting for a slot to download
        watched: dict[str, list[_Item]] = {}  # job id -> files waiting on it (same content = same job)
        running: dict[Future[Any], _Item] = {}
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
                        if outcome is _Watch:
                            watched.setdefault(item.entry["job_id"], []).append(item)
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
                        fut = executor.submit(self._advance, item)
                        fut.add_done_callback(lambda _f: self._wake.set())
                        running[fut] = item
                    # poll jobs
                    now = self.clock()
                    if watched and now >= next_poll and not self._stop.is_set():
                        try:
                            changed = self._poll(watched, ready, results)
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
                    if not running and (self._stop.is_set() or (not pending and not ready and not watched)):
                        break
                    if (
                        (ready or pending)
                        and len(running) < self.options.concurrency
                        and not self._stop.is_set()
                    ):
                        continue  # a poll just made work ready: dispatch it now
                    timeout = 1.0
                    if watched:
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
        if self._fatal is not None:
            raise self._fatal
        ordered: list[FileResult] = []
        for item in items:
            r = results.get(item.key)
            if r is None:
                if not interrupted and not self._stop.is_set():  # pragma: no cover - defensive
                    r = FileResult(item.source.display, FAILED, "not processed", str(item.output))
                else:
                    continue
            ordered.append(r)
        return RunReport(ordered, interrupted=interrupted or (self._stop.is_set() and self._fatal is None))

    # -- worker side -----------------------------------------------------------------------------

    def _outcome(self, fut: Future[Any], item: _Item) -> Any:
        try:
            return fut.result()
        except _Stopped:
            return None
        except _FATAL as exc:
            if self._fatal is None:
                self._fatal = exc
            return None
        except SophonError as exc:
            return self._fail(item, _reason(exc))
        except OSError as exc:
            where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            return self._fail(item, f"{exc.strerror or exc}:{where}")

    def _advance(self, item: _Item) -> Any:
        """Run one file forward until it waits on its job (-> _Watch) or finishes (-> FileResult)."""
        e = item.entry
        if self.options.force and e.get("force_run") != self.run_id:
            from sophon_cli.client.idempotency import new_nonce

            # A fresh intent: forget the old entry, and give the job key a new nonce.
            self.store.delete(item.key)
            e.clear()
            self._save(item, "pending", nonce=new_nonce(), force_run=self.run_id, announce=False)
        if self._is_done(item):
            self._event(item, "cached", result=e.get("result"), output=e.get("output"))
            return self._result_from_entry(item, cached=True)
        if e.get("job_id") and e.get("job_status") in ("completed", "failed", "canceled"):
            return self._finish(item)
        if e.get("job_id"):
            return _Watch
        self._check_stop()
        if not e.get("sha256"):
            self._event(item, "hashing")
            digest = self._hash(item)
            self._save(item, "hashed", sha256=digest, source_bytes=item.size)
        self._check_stop()
        try:
            if not (e.get("upload_id") and e.get("state") == "uploaded"):
                self._upload(item)
            self._check_stop()
            self._create_job(item)
        except ConflictError as exc:
            return self._fail(
                item,
                f"the server refused to replay an earlier request ({exc}); run again with --force for a fresh job",
            )
        except BadRequestError as exc:
            if exc.status == 422 or exc.code in ("source_invalid", "source_unsupported"):
                return self._fallback(item, f"the server rejected the source: {exc}")
            raise
        if e.get("job_status") in ("completed", "failed", "canceled"):
            return self._finish(item)
        return _Watch

    def _hash(self, item: _Item) -> str:
        h = hashlib.sha256()
        done = 0
        with open(item.source.path, "rb") as fh:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    break
                h.update(block)
                done += len(block)
                self._progress(item, "hashing", done, item.size)
        return h.hexdigest()

    def _upload(self, item: _Item) -> None:
        e = item.entry

        def created(upload_id: str) -> None:
            if e.get("upload_id") != upload_id or e.get("state") != "uploading":
                self._save(item, "uploading", upload_id=upload_id)

        def progress(done: int, total: int) -> None:
            self._progress(item, "uploading", done, total)
            self._check_stop()

        result = self.client.uploads.upload_file(
            item.source.path,
            concurrency=self.options.part_concurrency,
            sha256=e["sha256"],
            on_created=created,
            on_progress=progress,
        )
        if result.sha256 != e["sha256"]:  # pragma: no cover - the engine checks this already
            raise SophonError(f"{item.source.display} changed while uploading")
        self._save(item, "uploaded", upload_id=result.upload_id, resumed_upload=bool(result.resumed))

    def _create_job(self, item: _Item) -> None:
        e = item.entry
        o = self.options
        key = job_idempotency_key(e["sha256"], item.size, e["upload_id"], o, e.get("nonce"))
        job = self.client.jobs.create(
            e["upload_id"],
            profile=o.profile,
            container=o.container,
            audio=o.audio,
            target_height=o.height,
            webhook_ids=list(o.webhook_ids) or None,
            metadata=dict(o.metadata) or None,
            idempotency_key=key,
        )
        item.job = job
        self._save(
            item, "job_created", job_id=job.id, job_status=job.status, profile=job.profile or o.profile
        )
        if job.is_terminal:  # it can already be over (or be a replay of a finished job)
            self._save(item, "job_done", **_job_facts(job))

    def _finish(self, item: _Item) -> FileResult:
        """The job is terminal: download (or fall back) and record the result."""
        e = item.entry
        job = item.job
        status = e.get("job_status")
        if status != "completed":
            why = e.get("job_error") or e.get("status_reason") or "no reason given"
            return self._fallback(item, f"job {status}: {why}")
        if e.get("final_artifact") == "original":
            return self._fallback(item, "nothing smaller than the source was made")
        out = item.output
        server_bytes = e.get("server_output_bytes")
        if isinstance(server_bytes, int) and server_bytes > item.size:
            # The job says its output is larger than the source: no need to fetch it to know.
            _unlink(out)
            return self._fallback(item, _larger(server_bytes, item.size))
        if not (e.get("state") == "downloaded" and out.exists() and e.get("output") == str(out)):
            self._check_stop()
            expected = e.get("output_sha256")
            if out.exists() and expected and _sha256_file(out) == expected:
                pass  # already there and verified (e.g. the cache was deleted after a download)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                self._event(item, "downloading", job_id=e["job_id"])

                def progress(done: int, total: int | None = None, *_: Any) -> None:
                    self._progress(item, "downloading", done, total)
                    self._check_stop()

                dl = self.client.downloads.download(
                    e["job_id"], out, force=True, on_progress=progress, job=job
                )
                if getattr(dl, "skipped", False) or dl.final_artifact == "original":
                    self._save(item, "job_done", final_artifact="original", announce=False)
                    return self._fallback(item, "nothing smaller than the source was made")
                if dl.path and Path(dl.path) != out:  # pragma: no cover - the engine honours target
                    os.replace(dl.path, out)
            out_bytes = out.stat().st_size
            self._save(item, "downloaded", output=str(out), output_bytes=out_bytes)
        out_bytes = int(e.get("output_bytes") or out.stat().st_size)
        if out_bytes > item.size:
            _unlink(out)
            return self._fallback(item, _larger(out_bytes, item.size))
        return self._done(item, ENCODED, None, output=str(out), output_bytes=out_bytes)

    def _fallback(self, item: _Item, reason: str) -> FileResult:
        mode = self.options.fallback
        if mode == "fail":
            return self._fail(item, reason)
        if mode == "skip":
            return self._done(item, SKIPPED, reason, output=None, output_bytes=None)
        target = fallback_path_for(item.output, item.source.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_copy(item.source.path, target)
        self._event(item, "fallback", reason=reason, output=str(target))
        return self._done(item, ORIGINAL_KEPT, reason, output=str(target), output_bytes=target.stat().st_size)

    def _done(
        self, item: _Item, result: str, reason: str | None, *, output: str | None, output_bytes: int | None
    ) -> FileResult:
        saved = None
        if output_bytes is not None and item.size:
            saved = round(100.0 * (item.size - output_bytes) / item.size, 1)
        self._save(
            item,
            "done",
            result=result,
            reason=reason,
            output=output,
            output_bytes=output_bytes,
            saved_percent=saved,
            source_bytes=item.size,
            fallback=self.options.fallback,
        )
        return self._result_from_entry(item)

    def _fail(self, item: _Item, reason: str) -> FileResult:
        self._save(item, "failed", result=FAILED, reason=reason, failed_at_state=item.entry.get("state"))
        return self._result_from_entry(item)

    def _result_from_entry(self, item: _Item, *, cached: bool = False) -> FileResult:
        e = item.entry
        return FileResult(
            file=item.source.display,
            result=e.get("result") or FAILED,
            reason=e.get("reason"),
            output=e.get("output"),
            source_bytes=item.size,
            output_bytes=e.get("output_bytes"),
            saved_percent=e.get("saved_percent"),
            profile=e.get("profile") or self.options.profile,
            effective_profile=e.get("effective_profile"),
            job_id=e.get("job_id"),
            upload_id=e.get("upload_id"),
            cached=cached,
            timed_out=bool(e.get("timed_out")),
        )

    def _is_done(self, item: _Item) -> bool:
        e = item.entry
        if e.get("state") != "done":
            return False
        out = e.get("output")
        if e.get("result") != ENCODED and e.get("fallback") != self.options.fallback:
            return False  # fell back under another --fallback: decide again (locally)
        if e.get("result") in (ENCODED, ORIGINAL_KEPT):
            return bool(out) and Path(out).exists()
        return e.get("result") == SKIPPED

    # -- job watching (calling thread) -----------------------------------------------------------

    def _poll(
        self, watched: dict[str, list[_Item]], ready: deque[_Item], results: dict[str, FileResult]
    ) -> bool:
        """One tick: refresh every watched job; move terminal ones to ``ready``. True if anything
        changed (which resets the backoff)."""
        jobs = self.fetch_jobs(list(watched))
        changed = False
        now = self.clock()
        for job_id, job in jobs.items():
            for item in watched.pop(job_id):
                if job is None:
                    reason = (
                        f"job {job_id} does not exist on this server; run again with --force for a new job"
                    )
                    results[item.key] = self._fail(item, reason)
                    changed = True
                    continue
                changed = self._observe(item, job) or changed
                if job.is_terminal:
                    ready.append(item)
                    changed = True
                elif (
                    self.options.timeout is not None
                    and now - (item.waited_since or now) >= self.options.timeout
                ):
                    results[item.key] = self._fail_timeout(item, job)
                else:
                    watched.setdefault(job_id, []).append(item)
        return changed

    def _observe(self, item: _Item, job: Any) -> bool:
        """Record what a poll saw of ``item``'s job; True if its status changed."""
        e = item.entry
        item.job = job
        percent = getattr(job.progress, "percent", None) if job.progress is not None else None
        if percent is not None:
            self._progress(item, "encoding", float(percent), 100.0)
        if job.status == e.get("job_status"):
            return False
        fields: dict[str, Any] = {"job_status": job.status}
        if job.is_terminal:
            fields.update(_job_facts(job))
        if job.is_terminal:
            self._save(item, "job_done", **fields)
        else:  # a status change of a running job: same step, its own event
            self._save(item, "job_created", event="job_status", **fields)
        return True

    def _fail_timeout(self, item: _Item, job: Any) -> FileResult:
        reason = (
            f"gave up after {self.options.timeout:g}s waiting for job {job.id} ({job.status}); "
            "run again to resume"
        )
        # Keep the entry at job_created so a rerun resumes waiting on the same job.
        self._event(item, "timed_out", job_id=job.id, job_status=job.status)
        r = self._result_from_entry(item)
        r.result, r.reason, r.timed_out = FAILED, reason, True
        return r

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
            self.requests_saved += max(0, len(jobs) - pages)
        for job_id in job_ids:
            if job_id not in jobs:
                try:
                    jobs[job_id] = self.client.jobs.get(job_id)
                except NotFoundError:
                    jobs[job_id] = None
        return jobs

    # -- helpers ---------------------------------------------------------------------------------

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped()

    def _save(
        self, item: _Item, state: str, *, announce: bool = True, event: str | None = None, **fields: Any
    ) -> None:
        e = item.entry
        fields["state"] = state
        if "path" not in e:
            fields.setdefault("path", str(item.source.path))
            fields.setdefault("fingerprint", self.fingerprint)
            fields.setdefault("size", item.size)
        e.update(fields)
        self.store.update(item.key, fields)
        if announce:
            detail = {
                k: v for k, v in fields.items() if k not in ("state", "path", "fingerprint", "forced_in_run")
            }
            self._event(item, event or state, **detail)

    def _event(self, item: _Item, state: str, **detail: Any) -> None:
        if self.on_event is None:
            return
        with self._emit_lock:
            self.on_event(Event(item.source.display, state, _jsonable(detail)))

    def _progress(self, item: _Item, phase: str, done: float, total: float | None) -> None:
        if self.on_progress is not None:
            self.on_progress(item.source.display, phase, done, total)


def _job_facts(job: Any) -> dict[str, Any]:
    out = job.output
    return {
        "job_status": job.status,
        "status_reason": job.status_reason,
        "job_error": getattr(job, "error", None),
        "final_artifact": getattr(job, "final_artifact", None),
        "effective_profile": job.effective_profile_id,
        "profile": job.profile,
        "output_sha256": getattr(out, "sha256", None) if out is not None else None,
        "server_output_bytes": getattr(out, "bytes", None) if out is not None else None,
    }


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, APIError) and isinstance(exc, BadRequestError):
        return f"the server rejected the source: {text}"
    return text


def _jsonable(detail: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in detail.items():
        if v is None:
            continue
        if isinstance(v, Path):
            v = str(v)
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            v = str(v)
        out[k] = v
    return out


def _larger(out_bytes: int, src_bytes: int) -> str:
    return f"the encode ({out_bytes} bytes) is larger than the source ({src_bytes} bytes)"


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
