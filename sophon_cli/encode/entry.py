"""The cache schema of ``sophon encode``: one typed ``FileEntry`` per (file, intent), walking ``State``.

Each file walks these states, and every step is written to the local cache (``state.StateStore``)
before the next one begins::

    pending -> hashed -> uploading -> uploaded -> job_created -> job_done -> downloaded -> done
                 (sha256)  (upload_id,   (upload     (job_id)      (terminal    (verified
                            saved before  complete)                  job facts)   output)
                            any part)

``failed`` marks a file that ended in error (a rerun retries it from the step it reached).

On disk an entry is a JSON object whose keys are the field names below (only the ones set). The
store merges field-level patches, so ``FileEntry.update`` returns exactly the patch to persist.
``schema`` versions the entry layout: entries written before it existed (schema 1, untyped dicts)
are read through ``FileEntry.from_dict``, which maps their one renamed key and drops keys that
were never read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

__all__ = [
    "ENTRY_SCHEMA",
    "FINISHED_STATES",
    "FileEntry",
    "FileStat",
    "Result",
    "State",
]

#: The layout version written into every entry (``schema``). 1 = the untyped dicts before it.
ENTRY_SCHEMA = 2


class State(str, Enum):
    """Where one file stands; persisted as its value."""

    PENDING = "pending"
    HASHED = "hashed"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    JOB_CREATED = "job_created"
    JOB_DONE = "job_done"
    DOWNLOADED = "downloaded"
    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: States after which ``sophon cache prune`` may drop an entry.
FINISHED_STATES = frozenset({State.DONE.value, State.FAILED.value})


class Result(str, Enum):
    """What a run made of one file (the summary's ``result``)."""

    ENCODED = "encoded"
    ORIGINAL_KEPT = "original kept"
    SKIPPED = "skipped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: Keys of schema-1 entries that are renamed in schema 2.
_RENAMED = {"forced_in_run": "force_run"}
#: Job statuses after which a job never changes.
TERMINAL_JOB_STATUSES = frozenset({"completed", "failed", "canceled"})


@dataclass
class FileEntry:
    """One file's persisted facts. Every field is optional: an entry fills in as the file advances."""

    # identity (written with the first save)
    path: str | None = None
    size: int | None = None
    fingerprint: str | None = None
    schema: int | None = None
    state: State = State.PENDING
    # the file as it was when its content facts were recorded: ``sha256`` and
    # ``content_fingerprint`` are trusted only while all of these still match (ctime too, which
    # no tool can restore, so a same-size rewrite with its mtime put back is caught)
    device: int | None = None
    inode: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    # hashing
    sha256: str | None = None
    content_fingerprint: str | None = None  # the upload's content fingerprint (its session key)
    source_bytes: int | None = None
    # upload
    upload_id: str | None = None
    resumed_upload: bool | None = None
    # job
    nonce: str | None = None  # --force: a fresh job key
    force_run: str | None = None  # the run that made the nonce (a rerun of that run keeps it)
    job_id: str | None = None
    job_status: str | None = None
    profile: str | None = None
    effective_profile: str | None = None
    status_reason: str | None = None
    job_error: str | None = None
    final_artifact: str | None = None
    output_sha256: str | None = None
    server_output_bytes: int | None = None
    # result
    output: str | None = None
    output_bytes: int | None = None
    verified: bool | None = None  # the output matched a known sha256 (False: only its size was checked)
    verification: str | None = None  # how the output was checked, in words (the safe writer's)
    #: the sha256 of the bytes this entry wrote at ``output`` (the encode or the copy), digested as
    #: they were written: how a rerun knows the file there is ours even when the server gave no
    #: sha256 for the output (``verified`` False)
    written_sha256: str | None = None
    result: Result | None = None
    reason: str | None = None
    saved_percent: float | None = None
    fallback: str | None = None  # the --fallback a fallback result was decided under
    failed_at_state: str | None = None
    # quality (encode/quality_gate.py)
    vmaf: float | None = None  # mean VMAF of the output against the source
    vmaf_sha256: str | None = None  # the output (``output_digest``) that score belongs to
    quality: dict[str, Any] | None = None  # the whole QualityReport (SSIM, PSNR, 1% low, ...)
    quality_below_threshold: bool | None = None  # the original was kept for a score below --min-vmaf
    # bookkeeping (written by the store)
    created_at: float | None = None
    updated_at: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FileEntry:
        """Read a stored entry of any schema (unknown keys are ignored, bad values dropped)."""
        entry = cls()
        if not data:
            return entry
        names = _FIELD_NAMES
        for key, value in data.items():
            key = _RENAMED.get(key, key)
            if key not in names or value is None:
                continue
            if key == "state":
                try:
                    value = State(value)
                except ValueError:
                    continue
            elif key == "result":
                try:
                    value = Result(value)
                except ValueError:
                    continue
            setattr(entry, key, value)
        return entry

    def to_dict(self) -> dict[str, Any]:
        """The stored form: every field that is set, enums as their values."""
        out: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            out[name] = value.value if isinstance(value, Enum) else value
        return out

    def update(self, **changes: Any) -> dict[str, Any]:
        """Set fields; return the patch to persist (enums as values)."""
        patch: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in _FIELD_NAMES:
                raise AttributeError(f"FileEntry has no field {key!r}")
            if key == "state" and value is not None:
                value = State(value)
            elif key == "result" and value is not None:
                value = Result(value)
            setattr(self, key, value)
            patch[key] = value.value if isinstance(value, Enum) else value
        return patch

    def same_file(self, stat: FileStat) -> bool:
        """True unless the recorded identity shows the file changed since (entries without one,
        written before it existed, are trusted as before)."""
        if self.inode is None or self.ctime_ns is None:
            return True
        return (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns) == stat.identity()

    @property
    def job_terminal(self) -> bool:
        return self.job_status in TERMINAL_JOB_STATUSES

    @property
    def output_digest(self) -> str | None:
        """The sha256 that names the encode this entry holds: the job's (the server's) when it
        gave one, else the digest of the bytes written (an unverified output)."""
        return self.output_sha256 or self.written_sha256

    def written_at(self, path: str) -> tuple[str, int | None] | None:
        """(sha256, size) of what this entry wrote at ``path``, if it records writing there."""
        if self.output != path:
            return None
        sha = self.written_sha256
        if sha is None:  # entries written before ``written_sha256`` existed: what the file must be
            sha = self.sha256 if self.result == Result.ORIGINAL_KEPT else self.output_sha256
        return (sha, self.output_bytes) if sha else None


@dataclass(frozen=True)
class FileStat:
    """What ``os.stat`` says of a source, as far as the cache cares."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: Any) -> FileStat:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def identity(self) -> tuple[int, int, int, int, int]:
        return (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)

    def digest_key(self) -> tuple[int, int, int, int]:
        """(device, inode, size, mtime_ns): where the digest of this content is remembered."""
        return (self.device, self.inode, self.size, self.mtime_ns)

    def fields(self) -> dict[str, int]:
        return {
            "device": self.device,
            "inode": self.inode,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
        }


_FIELD_NAMES = frozenset(f.name for f in fields(FileEntry))
