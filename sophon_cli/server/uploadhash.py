"""The sha256 of an upload's staging file, built from the bytes as they are received.

An :class:`UploadDigest` covers the contiguous prefix ``[0, upto)`` of the file made of recorded
parts. Every part writer feeds it the blocks it has just written (:meth:`PartFeed.feed`):

* the part that starts at ``upto`` (the *head*) is hashed block by block as it arrives, from a
  checkpoint of the hash taken at the part's start; if that part then fails (short body, client
  gone, disk full) the checkpoint is put back, so a failed part leaves nothing in the hash;
* a part further on keeps its blocks (references, no copy) until the prefix reaches it, within a
  process-wide :class:`RetainBudget`; over the budget it drops them and is read back from disk
  once the prefix reaches it, as are parts recorded before this process started (seeded from the
  store), in a worker thread;
* ``complete`` calls :meth:`UploadDigest.finish`, which hashes whatever is left from disk.

Everything except the disk reads runs on the event loop, so there is no locking. What makes the
bytes hashed the bytes on disk: the server lets one writer at a time write a part
(``routes.uploads.PartWriters``), and a recorded part is never written again, so a recorded
part's bytes are exactly those of the one writer that recorded it. A part that fails is written
over in full by the next writer of that part, whose bytes are the ones hashed. Should a writer
ever start below the prefix, the digest is marked invalid and ``finish`` reads the whole file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from .worker import sha256_file

BLOCK = 1 << 20
RETAIN_LIMIT = 64 << 20  # bytes of received parts kept for hashing, per server process


class RetainBudget:
    """How many received bytes all uploads together may keep in memory until they are hashed."""

    def __init__(self, limit: int = RETAIN_LIMIT) -> None:
        self.limit = int(limit)
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


class UploadDigest:
    def __init__(
        self,
        path: str | os.PathLike[str],
        chunk_size: int,
        file_size: int,
        budget: RetainBudget,
        on_disk: dict[int, int] | None = None,
    ) -> None:
        """``on_disk``: parts already recorded (by an earlier process), part number -> size."""
        self.path = Path(path)
        self.chunk = int(chunk_size)
        self.size = int(file_size)
        self.budget = budget
        self.upto = 0  # bytes [0, upto) are in _h, all of them recorded parts
        self.valid = True
        self.closed = False
        self._h = hashlib.sha256()
        self._head: PartFeed | None = None  # the writer of the part at `upto`, hashing as it goes
        self._ready: dict[int, list[bytes] | None] = {}  # recorded, not hashed: blocks or None (disk)
        self._reading: asyncio.Task[None] | None = None  # a disk read hashing into _h
        for n, size in (on_disk or {}).items():
            if size == self.part_size(n):
                self._ready[n] = None

    def part_size(self, n: int) -> int:
        return max(0, min(self.chunk, self.size - n * self.chunk))

    # part writers (event loop) --------------------------------------------------------------------

    def part(self, n: int) -> PartFeed:
        """A writer starts writing part ``n`` (it holds the part's writer lock)."""
        feed = PartFeed(self, n)
        if feed.start < self.upto or n in self._ready:  # a hashed or recorded part written again
            self.valid = False
        return feed

    def _advance(self) -> None:
        """Hash every recorded part that extends the prefix: kept blocks now, disk in a thread."""
        while self.valid and not self.closed and self._reading is None and self.upto < self.size:
            n = self.upto // self.chunk
            if n not in self._ready:
                return
            blocks = self._ready.pop(n)
            if blocks is None:  # only on disk: read it, and the disk-only parts right after it
                end = self.upto + self.part_size(n)
                while end < self.size and end // self.chunk in self._ready:
                    if self._ready[end // self.chunk] is not None:
                        break
                    del self._ready[end // self.chunk]
                    end += self.part_size(end // self.chunk)
                self._reading = asyncio.get_running_loop().create_task(self._read(self.upto, end))
                return
            for block in blocks:
                self._h.update(block)
                self.budget.give(len(block))
            self.upto += self.part_size(n)

    async def _read(self, start: int, end: int) -> None:
        try:
            await run_in_threadpool(_hash_range, self.path, self._h, start, end)
            self.upto = end
        except Exception:
            self.valid = False
        finally:
            self._reading = None
        self._advance()

    # complete / cancel ----------------------------------------------------------------------------

    async def finish(self) -> str:
        """The hex sha256 of the whole staging file: the prefix plus a read of the rest."""
        self.closed = True
        if self._reading is not None:
            await asyncio.shield(self._reading)
        self._release()
        if not self.valid:
            return await run_in_threadpool(sha256_file, self.path)
        h = self._h.copy()
        await run_in_threadpool(_hash_range, self.path, h, self.upto, None)
        return h.hexdigest()

    def close(self) -> None:
        self.closed = True
        self._release()

    def _release(self) -> None:
        for blocks in self._ready.values():
            for block in blocks or ():
                self.budget.give(len(block))
        self._ready.clear()


class PartFeed:
    """One writer's view of the digest while it writes part ``n``: feed, then recorded or failed."""

    def __init__(self, digest: UploadDigest, n: int) -> None:
        self.digest = digest
        self.n = n
        self.start = n * digest.chunk
        self.size = digest.part_size(n)
        self.blocks: list[bytes] | None = []  # kept until the prefix reaches the part (None: dropped)
        self.kept = 0
        self._checkpoint: hashlib._Hash | None = None
        self._done = False

    def feed(self, block: bytes) -> None:
        """``block`` follows the bytes fed before, and is in the file (the part fails if it
        could not be written)."""
        d = self.digest
        if d._head is self:
            d._h.update(block)
            return
        if d.closed or not d.valid or self.blocks is None:
            return
        if d._head is None and d._reading is None and d.upto == self.start:  # the prefix is here
            d._head = self
            self._checkpoint = d._h.copy()
            for kept in self.blocks:
                d._h.update(kept)
            self._drop()
            self.blocks = []  # streaming now: nothing more is kept
            d._h.update(block)
            return
        if d.budget.take(len(block)):
            self.blocks.append(block)
            self.kept += len(block)
        else:  # over the budget: this part is read back from disk once the prefix gets here
            self._drop()

    def recorded(self) -> None:
        """The part is recorded as received, in full."""
        if self._done:
            return
        self._done = True
        d = self.digest
        if d._head is self:
            d._head = None
            d.upto = self.start + self.size
        elif d.closed or not d.valid:
            self._drop()
            return
        else:
            d._ready[self.n] = self.blocks  # the budget stays taken until they are hashed
        d._advance()

    def failed(self) -> None:
        """The part was not recorded (its bytes will be written again in full by another writer)."""
        if self._done:
            return
        self._done = True
        d = self.digest
        if d._head is self:
            assert self._checkpoint is not None
            d._h = self._checkpoint
            d._head = None
        self._drop()

    def _drop(self) -> None:
        if self.blocks:
            self.digest.budget.give(self.kept)
        self.blocks = None
        self.kept = 0


def _hash_range(path: Path, h: hashlib._Hash, start: int, end: int | None) -> None:
    """Update ``h`` with the bytes of ``path`` from ``start`` to ``end`` (None: to the end of file)."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(start)
        pos = start
        while end is None or pos < end:
            want = BLOCK if end is None else min(BLOCK, end - pos)
            got = fh.readinto(view[:want])
            if not got:
                if end is not None:
                    raise OSError(f"short read at {pos} of {path}")
                return
            h.update(view[:got])
            pos += got
