"""Incremental sha256 of an upload's staging file, so that ``complete`` hashes only what is left.

A :class:`PrefixHash` covers the contiguous prefix of parts that *this process* received in full.
As parts land, :meth:`PrefixHash.kick` advances it in a worker thread (one at a time per upload);
``complete`` calls :meth:`PrefixHash.finish`, which hashes the file from the end of that prefix to
its end. Whatever the hasher missed (parts received before a restart or by another server on the
same data dir, a part that arrived short) simply stays outside the prefix and is read at
``complete``, exactly like before.

Safety: a received part is never rewritten, except by a duplicate PUT of the same part that was
already writing when the first copy was recorded. Every writer reports the offset it wrote at
(:meth:`PrefixHash.wrote_at`) once its bytes are in the file; a write below the reserved prefix
(bytes being or already hashed) invalidates the hasher and ``finish`` falls back to a full read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

from .worker import sha256_file

BLOCK = 1 << 20


class PrefixHash:
    def __init__(self, path: str | os.PathLike[str], chunk_size: int, file_size: int) -> None:
        self.path = Path(path)
        self.chunk = int(chunk_size)
        self.size = int(file_size)
        self.upto = 0  # bytes [0, upto) are in self._h
        self.reserved = 0  # bytes [0, reserved) are hashed or being hashed
        self.valid = True
        self.closed = False
        self._h = hashlib.sha256()
        self._parts: dict[int, int] = {}  # part number -> bytes this process wrote in full
        self._lock = threading.Lock()  # held while hashing
        self._sched = threading.Lock()  # guards _running/_again (never held long)
        self._running = False
        self._again = False

    # called on the event loop ------------------------------------------------------------------

    def wrote_at(self, offset: int) -> None:
        """A writer put bytes at ``offset`` (call once they are in the file, even after a failure)."""
        if offset < self.reserved:
            self.valid = False

    def add(self, part_number: int, size: int) -> None:
        """Part ``part_number`` is recorded as received with ``size`` bytes written in full."""
        self._parts[int(part_number)] = int(size)

    def kick(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Advance the prefix in a worker thread (coalesced: at most one run per upload at a time)."""
        with self._sched:
            if self._running:
                self._again = True
                return
            self._running = True
        (loop or asyncio.get_running_loop()).run_in_executor(None, self._run)

    # worker threads ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.advance()
            with self._sched:
                if not self._again:
                    self._running = False
                    return
                self._again = False

    def advance(self) -> None:
        """Hash every part that extends the contiguous prefix."""
        with self._lock:
            try:
                fd = None
                while self.valid and not self.closed and self.upto < self.size:
                    n, rem = divmod(self.upto, self.chunk)
                    expected = min(self.chunk, self.size - self.upto)
                    if rem or self._parts.get(n) != expected:
                        break
                    end = self.upto + expected
                    self.reserved = end  # before reading: a later write there invalidates
                    if fd is None:
                        fd = os.open(self.path, os.O_RDONLY)
                    self._update(fd, self._h, self.upto, end)
                    self.upto = end
            except Exception:
                self.valid = False
            finally:
                if fd is not None:
                    os.close(fd)

    def finish(self) -> str:
        """The hex sha256 of the whole file: the prefix plus a read of the rest, or a full read."""
        with self._lock:
            self.closed = True
            self.reserved = self.size  # from now on any write invalidates the result
            if not self.valid:
                return sha256_file(self.path)
            h = self._h.copy()
            fd = os.open(self.path, os.O_RDONLY)
            try:
                self._update(fd, h, self.upto, None)
            finally:
                os.close(fd)
            if not self.valid:  # a duplicate write landed in the prefix meanwhile
                return sha256_file(self.path)
            return h.hexdigest()

    def close(self) -> None:
        self.closed = True

    @staticmethod
    def _update(fd: int, h: hashlib._Hash, start: int, end: int | None) -> None:
        pos = start
        while end is None or pos < end:
            want = BLOCK if end is None else min(BLOCK, end - pos)
            data = os.pread(fd, want, pos)
            if not data:
                if end is not None:
                    raise OSError(f"short read at {pos}")
                return
            h.update(data)
            pos += len(data)
