"""Writing one upload part into the staging file, around the page cache where the system allows.

A buffered write copies every byte into the page cache and makes the filesystem account for each
new page; on a small VM that is the largest share of the CPU an upload costs the server, and the
bytes are not read back soon (``complete`` hashes what was received, see ``uploadhash``).
:class:`PartSink` therefore copies the received blocks into page-aligned buffers taken from a
small process-wide pool (:class:`DirectBuffers`) and writes each full buffer with ``O_DIRECT``
from a worker thread while the event loop goes on receiving. The unaligned end of the last part,
a part at an unaligned offset, a file system other than local ext4/xfs (or one that refuses the
write) and an exhausted pool fall back to plain writes of the same bytes: the file's contents
are the same either way.

:meth:`PartSink.close` waits for every write of the part to finish, even after an error, so no
write of a part is in flight once its writer gives the part up (one writer per part:
``routes.uploads.PartWriters``). A full disk raises :class:`DiskFull`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import mmap
import os
import threading
from pathlib import Path

from ..client.files import UNCACHED_FILE_SYSTEMS, file_system_type

ALIGN = 4096  # offsets, lengths and buffer addresses of O_DIRECT writes are multiples of this
BUFFER = 4 << 20
PER_PART = 2  # buffers one part writer uses: one filling while the other is written
POOL = 4 * PER_PART  # buffers of the whole process (32 MiB): 4 parts at a time, more write plainly

NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})
O_DIRECT = getattr(os, "O_DIRECT", 0)


class DiskFull(Exception):
    pass


class DirectBuffers:
    """Page-aligned buffers for ``O_DIRECT`` writes, made once and reused (a fresh mapping costs a
    page fault and a zeroed page for every 4 KiB)."""

    def __init__(self, count: int = POOL, size: int = BUFFER) -> None:
        self.size = size
        self._free: list[mmap.mmap] = []
        self._left = count
        self._uncached: dict[int, bool] = {}  # device -> O_DIRECT is used there

    def suits(self, fd: int) -> bool:
        """Whether the file system of ``fd`` is one where writing around the page cache is plain
        sailing (local ext4/xfs: the rule the client's downloads follow too)."""
        try:
            dev = os.fstat(fd).st_dev
        except OSError:
            return False
        if dev not in self._uncached:
            self._uncached[dev] = file_system_type(fd) in UNCACHED_FILE_SYSTEMS
        return self._uncached[dev]

    def take(self, n: int) -> list[mmap.mmap]:
        """``n`` buffers, or none at all."""
        if len(self._free) + self._left < n:
            return []
        got = [self._free.pop() for _ in range(min(n, len(self._free)))]
        while len(got) < n:
            self._left -= 1
            got.append(mmap.mmap(-1, self.size))
        return got

    def give(self, bufs: list[mmap.mmap]) -> None:
        self._free.extend(bufs)


class PartSink:
    """The bytes of one part, written at ``start`` onwards in the order given to :meth:`write`."""

    def __init__(self, path: str | os.PathLike[str], start: int, pool: DirectBuffers | None) -> None:
        self.path = Path(path)
        self.pos = start  # file offset of the next byte given to write()
        self._plain = os.open(self.path, os.O_WRONLY)  # FileNotFoundError once the upload is gone
        self._direct: int | None = None
        self._pool = pool
        self._free: collections.deque[mmap.mmap] = collections.deque()
        self._pending: collections.deque[tuple[concurrent.futures.Future[None], mmap.mmap]] = (
            collections.deque()
        )
        self._cur: mmap.mmap | None = None
        self._cur_at = start  # file offset of _cur's first byte
        self._fill = 0
        if pool is not None and O_DIRECT and start % ALIGN == 0 and pool.suits(self._plain):
            bufs = pool.take(PER_PART)
            if bufs:
                try:
                    self._direct = os.open(self.path, os.O_WRONLY | O_DIRECT)
                except OSError:  # no O_DIRECT on this filesystem (e.g. tmpfs on older kernels)
                    pool.give(bufs)
                else:
                    self._free.extend(bufs)
                    self._cur = self._free.popleft()

    @property
    def direct(self) -> bool:
        return self._direct is not None

    async def write(self, block: bytes) -> None:
        view = memoryview(block)
        if self._cur is None:
            _write_plain(self._plain, view, self.pos)
            self.pos += len(view)
            return
        while view:
            n = min(len(view), len(self._cur) - self._fill)
            self._cur[self._fill : self._fill + n] = view[:n]
            self._fill += n
            self.pos += n
            view = view[n:]
            if self._fill == len(self._cur):
                await self._submit(len(self._cur))

    async def _submit(self, length: int) -> None:
        """Start writing the first ``length`` bytes of the current buffer; move to a free one."""
        buf = self._cur
        assert buf is not None
        fut = _writers().submit(self._write_direct, buf, length, self._cur_at)
        self._pending.append((fut, buf))
        self._cur, self._cur_at, self._fill = None, self._cur_at + length, 0
        if not self._free:
            done, buf = self._pending.popleft()
            try:
                await asyncio.wrap_future(done)
            finally:
                self._free.append(buf)
        self._cur = self._free.popleft()

    def _write_direct(self, buf: mmap.mmap, length: int, offset: int) -> None:  # a writer thread
        view = memoryview(buf)[:length]
        done = 0
        try:
            assert self._direct is not None
            done = os.pwrite(self._direct, view, offset)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise DiskFull(str(exc)) from None
            if exc.errno != errno.EINVAL:
                raise
            # the filesystem opened the file for O_DIRECT but refuses the write: use the page cache
        if done < length:
            _write_plain(self._plain, view[done:], offset + done)

    async def close(self, complete: bool) -> None:
        """Write out what is buffered (when ``complete``), then wait for every write of the part,
        whatever happens; raises the first error (:class:`DiskFull` for a full disk)."""
        error: BaseException | None = None
        try:
            if complete and self._cur is not None and self._fill:
                aligned = self._fill - self._fill % ALIGN
                tail = memoryview(self._cur)[aligned : self._fill]
                try:
                    _write_plain(self._plain, tail, self._cur_at + aligned)
                finally:
                    tail.release()
                if aligned:
                    fut = _writers().submit(self._write_direct, self._cur, aligned, self._cur_at)
                    self._pending.append((fut, self._cur))
                    self._cur = None
        except BaseException as exc:
            error = exc
        try:
            while self._pending:
                fut, buf = self._pending[0]
                try:
                    await asyncio.wrap_future(fut)
                except asyncio.CancelledError:
                    concurrent.futures.wait([f for f, _ in self._pending])  # none left in flight
                    raise
                except BaseException as exc:
                    error = error or exc
                self._pending.popleft()
                self._free.append(buf)
        finally:
            for fd in (self._plain, self._direct):
                if fd is not None:
                    os.close(fd)
            self._direct = None
            if self._cur is not None:
                self._free.append(self._cur)
                self._cur = None
            if self._pool is not None:
                self._pool.give(list(self._free))
            self._free.clear()
        if error is not None:
            raise error


def _write_plain(fd: int, view: memoryview, offset: int) -> None:
    try:
        while view:
            done = os.pwrite(fd, view, offset)
            view = view[done:]
            offset += done
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise DiskFull(str(exc)) from None
        raise


_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _writers() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that run the O_DIRECT writes (they wait on the disk, hardly on the CPU)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="sophon-part-write")
        return _executor
