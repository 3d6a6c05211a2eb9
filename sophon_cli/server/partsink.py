"""Writing an upload's parts on a thread of its own, while the event loop receives the next bytes.

The event loop only receives. Each upload has one :class:`UploadWorker` thread; each part writer
queues its blocks there through a :class:`PartSink`, and the thread writes each block at its
offset in the staging file and, when the part extends the hashed prefix, hashes it. The digest
also hashes the blocks kept by parts further on there (:meth:`UploadWorker.call`). Both release
the GIL, so they run on the other core. One thread per upload, not per part: it is slower than the
receiving loop, so its queue seldom runs dry and the loop seldom has to wake it (a wake-up across
cores is expensive on small VMs), and its work (the upload's sha256) is serial anyway.

Blocks wait for the thread within the process's :class:`~.uploadhash.RetainBudget` (the receiver
waits when the queues are full, and TCP pushes back on the client).

What the route keeps: one writer per part (a sink's ``close`` and ``stop`` return only once the
thread is done with the part's last block, so the part's writer lock is never released while a
write may still land); a write error fails the part (raised at the next block or at ``close``; a
full disk is the contract's 503 ``capacity_exceeded``); after a failure or ``stop`` the part's
blocks still queued are dropped, neither written nor hashed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ApiError, Code

if TYPE_CHECKING:
    from .uploadhash import RetainBudget

_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_END = object()  # a sink's last item
HANDOFF = 1 << 20  # blocks go to the thread in batches of this much (one wake-up per batch at most)
_EXIT = None  # the worker's last item


def write_at(fd: int, block: bytes, offset: int) -> None:
    """Write all of ``block`` at ``offset``; a full disk is a 503 ``capacity_exceeded``."""
    view = memoryview(block)
    try:
        while view:
            done = os.pwrite(fd, view, offset)
            view = view[done:]
            offset += done
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise ApiError(
                503, Code.CAPACITY_EXCEEDED, "the server's disk is full; free space and retry the part"
            ) from None
        raise


class UploadWorker:
    """One upload's thread: writes (and hashes) the blocks its part sinks queue, and runs the
    digest's calls, in the order queued. Started when there is work, ended when no sink is open and
    no call is waiting (an upload session left open holds no thread). Used from the event loop."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._users = 0  # open sinks and waiting calls

    def _put(self, item: Any) -> None:
        if self._thread is None:  # (a new queue: the thread that is ending may still be on the old)
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._run,
                args=(self._queue, asyncio.get_running_loop()),
                name="sophon-upload-writer",
                daemon=True,
            )
            self._thread.start()
        self._queue.put(item)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the thread, after everything queued before."""
        done = asyncio.get_running_loop().create_future()
        self._users += 1
        try:
            self._put((fn, args, done))
            return await done
        finally:
            self._release()

    def sink(self, fd: int, offset: int, budget: RetainBudget) -> PartSink:
        self._users += 1
        return PartSink(self, fd, offset, budget)

    def _release(self) -> None:
        self._users -= 1
        if not self._users and self._thread is not None:  # (it ends after what is queued)
            self._queue.put(_EXIT)
            self._thread = None

    @staticmethod
    def _run(items: queue.SimpleQueue, loop: asyncio.AbstractEventLoop) -> None:
        get = items.get
        while True:
            item = get()
            if item is _EXIT:
                return
            target = item[0]
            if isinstance(target, PartSink):
                target._process(item, loop)
                continue
            fn, args, done = item
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller
                _tell(loop, _settle, done, None, exc)
            else:
                _tell(loop, _settle, done, result, None)


class PartSink:
    """One part writer's queue on its upload's thread: :meth:`put` blocks in order, then
    :meth:`close` (all written) or :meth:`stop` (the part failed: the rest is dropped)."""

    def __init__(self, worker: UploadWorker, fd: int, offset: int, budget: RetainBudget) -> None:
        self._worker = worker
        self._fd = fd
        self._offset = offset  # where the next block goes (the thread's)
        self._budget = budget
        self._error: BaseException | None = None
        self._stopping = False
        self._ended = False
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finished = threading.Event()  # the thread is done with this sink
        self._batch: list[tuple[bytes, hashlib._Hash | None, Sequence[bytes]]] = []
        self._batched = 0

    async def reserve(self, n: int) -> None:
        """Wait for room for ``n`` more bytes; raises the error of a block written before."""
        if self._error is not None:
            raise self._error
        if not self._budget.try_queue(n):
            await self._budget.queue(n)

    def put(self, block: bytes, h: hashlib._Hash | None, earlier: Sequence[bytes] = ()) -> None:
        """Queue ``block`` (its ``len`` reserved): write it, then hash it into ``h`` if given;
        ``earlier``: kept blocks, already written and counted in the budget as kept, to hash into
        ``h`` before it. Handed to the thread with the blocks after it, up to :data:`HANDOFF`."""
        if not self._batch:
            self._budget.batching.add(self)
        self._batch.append((block, h, earlier))
        self._batched += len(block)
        if self._batched >= HANDOFF:
            self.flush()

    def flush(self) -> None:
        """Hand the blocks put so far to the thread."""
        if self._batch:
            self._worker._put((self, self._batch))
            self._batch, self._batched = [], 0
            self._budget.batching.discard(self)

    async def close(self) -> None:
        """Wait until every block is written (and hashed); raises the first error, if any."""
        await self._end()
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        """Drop what is still queued and wait until the thread is done with this part."""
        self._stopping = True
        await self._end()

    async def _end(self) -> None:
        if not self._ended:
            self._ended = True
            if self._stopping:  # never handed over: dropped here
                for block, _, earlier in self._batch:
                    self._budget.done(len(block), sum(len(b) for b in earlier))
                self._batch, self._batched = [], 0
                self._budget.batching.discard(self)
            self.flush()
            self._worker._put((self, _END))
        try:
            await asyncio.shield(self._done)
        except asyncio.CancelledError:
            # the writer lock must not be released while a write may land: wait for it here
            self._stopping = True
            self._finished.wait()
            raise

    def _process(self, item: tuple, loop: asyncio.AbstractEventLoop) -> None:
        """On the thread: a batch of this sink's blocks, or its end."""
        batch = item[1]
        if batch is _END:
            self._finished.set()
            _tell(loop, self._finish)
            return
        written = hashed = 0
        try:
            for block, h, earlier in batch:
                written += len(block)
                if earlier:
                    hashed += sum(len(b) for b in earlier)
                if self._error is not None or self._stopping:
                    continue
                try:
                    for kept in earlier:
                        h.update(kept)  # type: ignore[union-attr]
                    write_at(self._fd, block, self._offset)
                    if h is not None:
                        h.update(block)
                    self._offset += len(block)
                except BaseException as exc:  # noqa: BLE001 - raised on the loop
                    self._error = exc
        finally:
            self._budget.done(written, hashed)

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
        self._worker._release()


def _tell(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Run ``callback`` on the loop (from the thread); nothing once the loop is closed (a server
    stopped with a part in flight: nobody waits any more)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def _settle(done: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if done.done():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)
