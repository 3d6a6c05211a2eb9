"""The sha256 of an upload's staging file, built from the bytes as they are received.

An :class:`UploadDigest` covers the contiguous prefix ``[0, upto)`` of the file made of recorded
parts. Every part writer tells it about each block it queues for writing (:meth:`PartFeed.feed`):

* the part that starts at ``upto`` (the *head*) is hashed block by block as it arrives, from a
  checkpoint of the hash taken at the part's start: its writer's thread (``partsink.PartSink``)
  hashes each block into :attr:`PartFeed.h` after writing it; if that part then fails (short
  body, client gone, disk full) the checkpoint is put back once the writer's thread has stopped,
  so a failed part leaves nothing in the hash;
* a part further on keeps its blocks (references, no copy) until the prefix reaches it, within a
  process-wide :class:`RetainBudget`; over the budget it drops them and is read back from disk
  once the prefix reaches it, as are parts recorded before this process started (seeded from the
  store); kept blocks of recorded parts and disk reads are hashed in a worker thread;
* ``complete`` calls :meth:`UploadDigest.finish`, which hashes whatever is left from disk.

The state (which part is the head, what is kept, ``upto``) lives on the event loop. The hash
object is touched by one thread at a time: the head's writer thread, or the one task in
``_reading``, and a part only becomes the head when there is neither. What makes the bytes
hashed the bytes on disk: the server lets one writer at a time write a part
(``routes.uploads.PartWriters``), a part is recorded only once all its blocks are written, and a
recorded part is never written again, so a recorded part's bytes are exactly those of the one
writer that recorded it. A part that fails is written over in full by the next writer of that
part, whose bytes are the ones hashed. Should a writer ever start below the prefix, the digest is
marked invalid and ``finish`` reads the whole file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from .partsink import UploadWorker
from .worker import sha256_file

BLOCK = 1 << 20
RETAIN_LIMIT = 64 << 20  # bytes of received parts held in memory, per server process
QUEUE_LIMIT = 8 << 20  # of which waiting for the part writers' threads (the rest: kept for hashing)
INLINE_HASH = 1 << 20  # kept blocks of recorded parts below this are hashed on the event loop


class RetainBudget:
    """The received bytes all uploads together hold in memory, at most ``limit``:

    * *kept* by parts ahead of the hashed prefix until they are hashed (:meth:`take`,
      :meth:`give`; over the budget a part drops them and is read back later), including kept
      blocks handed to a writer's thread to hash (given back in :meth:`done`), at most
      ``limit - queue_limit``;
    * *queued* for the part writers' threads until written (:meth:`queue` waits for room,
      :meth:`done` from any thread), at most ``queue_limit`` (a block always gets through when
      nothing is queued).

    A block both kept and queued counts twice: the sum is an upper bound of what is held."""

    def __init__(self, limit: int = RETAIN_LIMIT, queue_limit: int = QUEUE_LIMIT) -> None:
        self.limit = int(limit)
        self.queue_limit = min(int(queue_limit), self.limit // 2)
        self.kept = 0
        self.queued = 0
        self._lock = threading.Lock()
        self._waiters: list[asyncio.Future[None]] = []
        self.batching: set[Any] = set()  # writers holding queued bytes not yet handed to a thread

    @property
    def held(self) -> int:
        return self.kept + self.queued

    def take(self, n: int) -> bool:
        with self._lock:
            if self.kept + n > self.limit - self.queue_limit:
                return False
            self.kept += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.kept -= n

    def try_queue(self, n: int) -> bool:
        """:meth:`queue` if there is room now."""
        with self._lock:
            if self.queued and self.queued + n > self.queue_limit:
                return False
            self.queued += n
            return True

    async def queue(self, n: int) -> None:
        """Room for ``n`` bytes waiting for a writer's thread; waits while the queues are full.
        Before it waits, every writer hands its batch to its thread (``flush``): then all the
        queued bytes are on a thread and each :meth:`done` brings the room back."""
        while True:
            with self._lock:
                if not self.queued or self.queued + n <= self.queue_limit:
                    self.queued += n
                    return
            for writer in list(self.batching):
                writer.flush()
            with self._lock:
                if not self.queued or self.queued + n <= self.queue_limit:
                    continue
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
            await waiter

    def done(self, written: int, hashed: int = 0) -> None:
        """A writer's thread is done with ``written`` queued bytes and ``hashed`` kept ones (any
        thread)."""
        with self._lock:
            self.queued -= written
            self.kept -= hashed
            if not self._waiters or self.queued > self.queue_limit // 2:
                return  # (woken in batches: a wake-up across cores is not cheap)
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            try:
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
        self._reading: asyncio.Task[None] | None = None  # a thread hashing into _h
        self.worker = UploadWorker()  # the upload's thread: part writes, hashing of kept blocks
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
        """Hash every recorded part that extends the prefix, from the blocks it kept (on the loop
        when they are few, else in a thread) or from disk (in a thread)."""
        while self.valid and not self.closed and self._reading is None and self.upto < self.size:
            n = self.upto // self.chunk
            if n not in self._ready:
                return
            on_disk = self._ready[n] is None  # only on disk: read back (else hash what it kept)
            end, blocks = self.upto, []
            while end < self.size and end // self.chunk in self._ready:  # and the parts like it after it
                if (self._ready[end // self.chunk] is None) is not on_disk:
                    break
                blocks += self._ready.pop(end // self.chunk) or ()
                end += self.part_size(end // self.chunk)
            if on_disk:
                self._reading = asyncio.get_running_loop().create_task(self._read(self.upto, end))
                return
            kept = sum(len(b) for b in blocks)
            if kept >= INLINE_HASH:
                self._reading = asyncio.get_running_loop().create_task(self._hash_kept(blocks, kept, end))
                return
            _hash_blocks(self._h, blocks)
            self.budget.give(kept)
            self.upto = end

    async def _hash_kept(self, blocks: list[bytes], kept: int, end: int) -> None:
        try:
            await self.worker.call(_hash_blocks, self._h, blocks)
            self.upto = end
        except Exception:
            self.valid = False
        finally:
            self.budget.give(kept)
            self._reading = None
        self._advance()

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
    """One writer's view of the digest while it writes part ``n``: feed, then recorded or failed.

    ``h``: once the part extends the hashed prefix, the hash its writer updates with every block
    after writing it (None before: the blocks are kept, or dropped over the budget)."""

    def __init__(self, digest: UploadDigest, n: int) -> None:
        self.digest = digest
        self.n = n
        self.start = n * digest.chunk
        self.size = digest.part_size(n)
        self.blocks: list[bytes] | None = []  # kept until the prefix reaches the part (None: dropped)
        self.kept = 0
        self.h: hashlib._Hash | None = None
        self._checkpoint: hashlib._Hash | None = None
        self._done = False

    def feed(self, block: bytes) -> Sequence[bytes]:
        """``block`` follows the bytes fed before and is queued for writing, in order (the part
        fails if it cannot be written). Returns the blocks this part kept before it became the
        head: the writer hashes them into ``h`` before ``block``, then gives them back to the
        budget (:meth:`RetainBudget.done`)."""
        d = self.digest
        if self.h is not None or d.closed or not d.valid or self.blocks is None:
            return ()
        if d._head is None and d._reading is None and d.upto == self.start:  # the prefix is here
            d._head = self
            self._checkpoint = d._h.copy()
            self.h = d._h
            earlier, self.blocks = self.blocks, []  # streaming now: nothing more is kept
            self.kept = 0  # (still in the budget: the writer's thread gives them back once hashed)
            return earlier
        if d.budget.take(len(block)):
            self.blocks.append(block)
            self.kept += len(block)
        else:  # over the budget: this part is read back from disk once the prefix gets here
            self._drop()
        return ()

    def recorded(self) -> None:
        """The part is recorded as received, in full."""
        if self._done:
            return
        self._done = True
        d = self.digest
        if d._head is self:
            d._head = None
            self.h = None
            d.upto = self.start + self.size
        elif d.closed or not d.valid:
            self._drop()
            return
        else:
            d._ready[self.n] = self.blocks  # the budget stays taken until they are hashed
        d._advance()

    def failed(self) -> None:
        """The part was not recorded (its bytes will be written again in full by another writer).
        Its writer's thread has stopped: nothing updates ``h`` any more."""
        if self._done:
            return
        self._done = True
        d = self.digest
        if d._head is self:
            assert self._checkpoint is not None
            d._h = self._checkpoint
            d._head = None
            self.h = None
        self._drop()

    def _drop(self) -> None:
        if self.blocks:
            self.digest.budget.give(self.kept)
        self.blocks = None
        self.kept = 0


def _hash_blocks(h: hashlib._Hash, blocks: list[bytes]) -> None:
    for block in blocks:
        h.update(block)


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
