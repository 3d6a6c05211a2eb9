"""The local state cache behind ``sophon encode`` (and ``sophon cache``).

On disk, next to each other::

    state.json          snapshot: {"version": 1, "entries": {key: entry, ...}}
    state.json.journal  append-only JSON lines, one update each, replayed over the snapshot
    state.json.lock     the file lock every writer (and every full read) takes

Why two files: rewriting a 10,000-entry JSON document for every state change of every file would
make each update cost O(entries). Instead an update appends one short JSON line to the journal
(under the lock, flushed and fsynced), which costs the same at 10 or 10,000 entries. When the
journal has grown past ``max(compact_bytes, size of the snapshot)`` the next update folds it into a
new snapshot, written atomically (temp file in the same directory, fsync, ``os.replace``, fsync
of the directory), then empties the journal. Because compaction only happens after at least a
snapshot's worth of appends, its cost amortises to O(1) per update.

Reading replays snapshot + journal. Journal records assign fields (never increment), so replaying
a journal twice over a snapshot that already contains it gives the same result: a crash between
"replace snapshot" and "empty journal" is harmless. A torn last journal line (a writer killed
mid-append) is ignored; an unreadable line in the middle is skipped with a warning. A corrupt or
unknown-version snapshot is moved aside to ``state.json.corrupt-<timestamp>`` with a warning and
the cache starts empty: the cache is an optimisation, the server's idempotency keys are the safety
net, so losing it never creates duplicate work.

Compaction is an optimisation: ``compact(optional=True)`` (and the automatic one) turns a snapshot
that cannot be written (a full disk) into one warning and keeps the journal, which alone holds every
update. A writer killed mid-compaction leaves a ``.state.json.<pid>.<tid>.tmp``; snapshots are only
written under the lock, so the first store to take the lock removes any such file.

Files are created 0600 and a directory the store creates is 0700. Warnings are collected in
``StateStore.warnings`` (and passed to ``on_warning``); the library never prints.

This module imports only the standard library, ``filelock`` and (for the default path)
``platformdirs``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sophon_cli.client.errors import SophonError
from sophon_cli.next_steps import Step

__all__ = [
    "STATE_VERSION",
    "StateError",
    "StateStore",
    "default_state_path",
]

STATE_VERSION = 1

_FILE_MODE = 0o600
_DIR_MODE = 0o700


class StateError(SophonError):
    """The state file could not be locked or written; ``step`` is the next step as data."""

    def __init__(self, message: str, *, step: Step, hint: str) -> None:
        self.step = step
        super().__init__(message, hint=hint)


def default_state_path(env: Mapping[str, str] | None = None) -> Path:
    """``$SOPHON_HOME/state.json``, else ``<user state dir>/sophon/state.json``."""
    env = os.environ if env is None else env
    home = env.get("SOPHON_HOME")
    if home:
        return Path(home).expanduser() / "state.json"
    from platformdirs import user_state_dir

    return Path(user_state_dir("sophon", appauthor=False)) / "state.json"


class StateStore:
    """A dict of ``key -> entry`` (entries are JSON objects) persisted as described above.

    One instance may be shared by threads. Several processes may use the same path at once: every
    write happens under the file lock and is a field-level merge, so concurrent writers never lose
    each other's updates.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compact_bytes: int = 1 << 20,
        lock_timeout: float = 60.0,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.compact_bytes = compact_bytes
        self.lock_timeout = lock_timeout
        self.on_warning = on_warning
        self.warnings: list[str] = []
        self._entries: dict[str, dict[str, Any]] | None = None
        self._mutex = threading.RLock()
        self._flock: Any = None
        self._swept = False  # stale snapshot temp files removed (once, under the lock)
        self._compact_warned = False

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r})"

    # ------------------------------------------------------------------ reading

    def load(self) -> dict[str, dict[str, Any]]:
        """Read snapshot + journal from disk (refreshing the in-memory view); return a copy."""
        with self._locked():
            self._entries = self._read_locked()
            return {k: dict(v) for k, v in self._entries.items()}

    def entries(self) -> dict[str, dict[str, Any]]:
        """The in-memory view (loaded on first use). Returns a shallow copy."""
        with self._mutex:
            if self._entries is None:
                self.load()
            assert self._entries is not None
            return {k: dict(v) for k, v in self._entries.items()}

    def get(self, key: str) -> dict[str, Any] | None:
        with self._mutex:
            if self._entries is None:
                self.load()
            assert self._entries is not None
            entry = self._entries.get(key)
            return dict(entry) if entry is not None else None

    def __len__(self) -> int:
        with self._mutex:
            if self._entries is None:
                self.load()
            assert self._entries is not None
            return len(self._entries)

    # ------------------------------------------------------------------ writing

    def update(self, key: str, fields: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """Merge ``fields`` into the entry ``key`` (creating it) and persist the change.

        Cost: one short append + fsync, independent of the number of entries (plus, rarely, an
        amortised compaction); it does not read the cache. Returns the merged entry as this
        process sees it (just the patch if this store has not read the cache yet).
        """
        patch = dict(fields or {})
        patch.update(more)
        now = time.time()
        patch.setdefault("updated_at", now)
        with self._locked():
            record = {"v": STATE_VERSION, "op": "set", "k": key, "f": patch}
            journal_size = self._append_locked(record)
            if self._entries is not None:
                entry = self._entries.setdefault(key, {"created_at": patch["updated_at"]})
                entry.update(patch)
                result = dict(entry)
            else:
                result = dict(patch)
            if journal_size > self._compact_threshold():
                self._compact_optional_locked()
        return result

    def delete(self, key: str) -> None:
        with self._locked():
            self._append_locked({"v": STATE_VERSION, "op": "del", "k": key})
            if self._entries is not None:
                self._entries.pop(key, None)

    def prune(
        self,
        older_than: float,
        *,
        now: float | None = None,
        finished_states: Iterable[str] | None = None,
    ) -> list[str]:
        """Drop finished entries not updated for ``older_than`` seconds; return their keys.

        ``finished_states`` defaults to the encode schema's (``encode.entry.FINISHED_STATES``)."""
        if finished_states is None:
            from sophon_cli.encode.entry import FINISHED_STATES as finished_states
        now = time.time() if now is None else now
        finished = set(finished_states)
        with self._mutex, self._locked():
            entries = self._read_locked()
            dropped = [
                k
                for k, e in entries.items()
                if e.get("state") in finished and now - float(e.get("updated_at") or 0) >= older_than
            ]
            for k in dropped:
                del entries[k]
            self._write_snapshot_locked(entries)
            self._entries = entries
            return dropped

    def clear(self) -> int:
        """Remove every entry; return how many there were."""
        with self._mutex, self._locked():
            entries = self._read_locked()
            self._write_snapshot_locked({})
            self._entries = {}
            return len(entries)

    def compact(self, *, optional: bool = False) -> bool:
        """Fold the journal into a fresh snapshot now; True if it was.

        With ``optional`` a snapshot that cannot be written (a full disk, a quota) is a warning,
        not an error: the journal alone still holds every update, and stays."""
        with self._mutex, self._locked():
            if optional:
                return self._compact_optional_locked()
            self._compact_locked()
            return True

    # ------------------------------------------------------------------ internals

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.on_warning is not None:
            self.on_warning(message)

    def _ensure_dir(self) -> None:
        parent = self.path.parent
        if not parent.is_dir():
            parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)

    def _locked(self):
        from filelock import FileLock, Timeout

        store = self

        class _Ctx:
            def __enter__(self_inner):
                store._mutex.acquire()
                try:
                    if store._flock is None:
                        store._ensure_dir()
                        store._flock = FileLock(
                            str(store.lock_path),
                            timeout=store.lock_timeout,
                            mode=_FILE_MODE,
                            thread_local=False,
                        )
                    store._flock.acquire()
                    if not store._swept:
                        store._sweep_locked()
                except Timeout:
                    store._mutex.release()
                    raise StateError(
                        f"timed out after {store.lock_timeout:g}s waiting for the state lock {store.lock_path}",
                        step=Step.STATE_BUSY,
                        hint="another sophon process is holding it; wait for it or use another state file",
                    ) from None
                except BaseException:
                    store._mutex.release()
                    raise
                return store

            def __exit__(self_inner, *exc: Any) -> None:
                try:
                    store._flock.release()
                finally:
                    store._mutex.release()

        return _Ctx()

    def _compact_threshold(self) -> int:
        try:
            snap = os.stat(self.path).st_size
        except FileNotFoundError:
            snap = 0
        return max(self.compact_bytes, snap)

    def _append_locked(self, record: dict[str, Any]) -> int:
        """Append one record as a single write; return the journal size afterwards."""
        line = json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n"
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _FILE_MODE)
        try:
            size = os.fstat(fd).st_size
            if size:
                # A writer killed mid-append leaves a line without its newline: start a fresh line
                # so this record is not glued onto the torn one.
                with open(self.journal_path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        line = "\n" + line
            data = line.encode("utf-8")
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            return size + len(data)
        except OSError as exc:
            raise StateError(
                f"could not write the state journal {self.journal_path}: {exc.strerror or exc}",
                step=Step.STATE_UNWRITABLE,
                hint="check free space and permissions, or use another state file",
            ) from exc
        finally:
            os.close(fd)

    def _read_locked(self) -> dict[str, dict[str, Any]]:
        entries = self._read_snapshot_locked()
        try:
            with open(self.journal_path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return entries
        lines = raw.split(b"\n")
        torn_tail = not raw.endswith(b"\n")
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or record.get("v") != STATE_VERSION:
                    raise ValueError("unknown record")
                _apply(entries, record)
            except (ValueError, TypeError, KeyError):
                if torn_tail and index == len(lines) - 1:
                    continue  # a writer was killed mid-append: that update never happened
                self._warn(f"skipped an unreadable line {index + 1} of the state journal {self.journal_path}")
        return entries

    def _read_snapshot_locked(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return {}
        reason = None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc, reason = None, "is not valid JSON"
        if reason is None:
            if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
                reason = "is not a sophon state file"
            elif doc.get("version") != STATE_VERSION:
                reason = f"has version {doc.get('version')!r} (this sophon reads version {STATE_VERSION})"
        if reason is None:
            entries = {str(k): v for k, v in doc["entries"].items() if isinstance(v, dict)}
            return entries
        aside = self.path.with_name(
            f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        )
        try:
            os.replace(self.path, aside)
            # The journal was written against the bad snapshot; keep it with it.
            if self.journal_path.exists():
                os.replace(self.journal_path, aside.with_name(aside.name + ".journal"))
        except OSError:
            pass
        self._warn(f"the state file {self.path} {reason}; moved it to {aside.name} and started a fresh cache")
        return {}

    def _write_snapshot_locked(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self._ensure_dir()
        doc = {"version": STATE_VERSION, "entries": entries}
        data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
            # Only now is the journal redundant. (A crash before this line replays it over the new
            # snapshot, which is harmless: records assign, they never accumulate.)
            if self.journal_path.exists():
                fd = os.open(self.journal_path, os.O_WRONLY | os.O_TRUNC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StateError(
                f"could not write the state file {self.path}: {exc.strerror or exc}",
                step=Step.STATE_UNWRITABLE,
                hint="check free space and permissions, or use another state file",
            ) from exc

    def _compact_optional_locked(self) -> bool:
        """Compaction is an optimisation: when it fails, warn (once per store) and keep the journal."""
        try:
            self._compact_locked()
            return True
        except StateError as exc:
            if not self._compact_warned:
                self._compact_warned = True
                self._warn(f"{exc}; kept the journal {self.journal_path.name} (nothing is lost)")
            return False

    def _sweep_locked(self) -> None:
        """Remove snapshot temp files a writer killed mid-compaction left (``.state.json.*.tmp``).
        Snapshots are only written under the lock, so with the lock held none is in progress."""
        self._swept = True
        prefix, suffix = f".{self.path.name}.", ".tmp"
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return
        for name in names:
            if name.startswith(prefix) and name.endswith(suffix):
                try:
                    os.unlink(self.path.parent / name)
                except OSError:
                    pass

    def _compact_locked(self) -> None:
        entries = self._read_locked()
        self._write_snapshot_locked(entries)
        self._entries = entries


def _apply(entries: dict[str, dict[str, Any]], record: Mapping[str, Any]) -> None:
    op = record["op"]
    if op == "set":
        fields = record["f"]
        if not isinstance(fields, dict):
            raise ValueError("bad fields")
        entry = entries.setdefault(str(record["k"]), {"created_at": fields.get("updated_at")})
        entry.update(fields)
    elif op == "del":
        entries.pop(str(record["k"]), None)
    else:
        raise ValueError(f"unknown op {op!r}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
