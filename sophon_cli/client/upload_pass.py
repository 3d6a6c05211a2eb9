"""One read pass over a file: every byte read once, in order, hashed, and handed to its part.

:func:`run_pass` reads the file sequentially in 1 MiB blocks on the calling thread, feeds every
block to one sha256, and hands the blocks of each part the server still lacks to a worker thread
that is already sending that part (so the first byte goes out as soon as the first block is read).
Parts the server already holds are read and hashed, not sent. Up to ``concurrency`` parts are in
flight at once; the blocks read but not yet sent never exceed ``READ_AHEAD`` bytes (the reader
waits), so memory stays flat whatever the file size.

A part whose request is retried is re-read from disk for the new attempt (its blocks were sent and
dropped), not re-hashed: if the file changed in between, the server's sha256 at ``complete`` no
longer matches the local one, and the caller finds out.

Progress and errors reach the calling thread: ``on_part_done(part_number, length)`` runs there after
each part the server acknowledged; the first failure of a worker is re-raised there.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sophon_cli.client.content import ShortRead

BLOCK = 1024 * 1024
READ_AHEAD = 32 * 1024 * 1024  # blocks read but not yet sent, over all parts in flight


def part_range(part_number: int, chunk_size: int, file_size: int) -> tuple[int, int]:
    """``(offset, length)`` of a 0-indexed part."""
    offset = part_number * chunk_size
    return offset, max(0, min(chunk_size, file_size - offset))


def read_range(
    fd: int, offset: int, length: int, *, block: int = BLOCK, part: int | None = None
) -> Iterator[bytes]:
    """The bytes ``[offset, offset + length)`` of an open file in ``block``-sized ``pread``s;
    :class:`ShortRead` when the file ends first."""
    pos, end = offset, offset + length
    while pos < end:
        data = os.pread(fd, min(block, end - pos), pos)
        if not data:
            raise ShortRead(part)
        pos += len(data)
        yield data


class PartSlice:
    """Bytes ``[offset, offset + length)`` of an open file, streamed in ``block``-sized reads.

    Re-iterable: every iteration reads the range again from its start, so a retried request
    re-sends the whole part. ``len()`` is the part's length (sent as ``Content-Length``).
    """

    def __init__(
        self, fd: int, offset: int, length: int, *, block: int = BLOCK, part_number: int | None = None
    ) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length
        self.block = max(1, int(block))
        self.part_number = part_number

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        return read_range(self.fd, self.offset, self.length, block=self.block, part=self.part_number)


class Aborted(Exception):
    """The pass stopped (an error elsewhere, or the caller was interrupted): stop sending."""


class _Gate:
    """The state shared by the reader and the senders, guarded by one condition variable."""

    def __init__(self, limit: int) -> None:
        self.cv = threading.Condition()
        self.limit = limit
        self.buffered = 0
        self.aborted = False
        self.done: deque[int] = deque()  # part numbers whose request finished (any outcome)

    def abort(self) -> None:
        with self.cv:
            self.aborted = True
            self.cv.notify_all()


class PartStream:
    """The body of one part during the pass.

    The first iteration yields the reader's blocks as they arrive (and drops each once it is sent).
    A second iteration is a retry: it re-reads the range from disk, and the blocks the reader still
    hands over are dropped.
    """

    def __init__(self, gate: _Gate, fd: int, offset: int, length: int, part_number: int) -> None:
        self._gate = gate
        self.fd = fd
        self.offset = offset
        self.length = length
        self.part_number = part_number
        self._blocks: deque[bytes] = deque()
        self._iterated = False
        self._detached = False  # a retry re-reads from disk; closed parts take nothing either

    def __len__(self) -> int:
        return self.length

    # called by the reader ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        g = self._gate
        with g.cv:
            if self._detached:
                return
            self._blocks.append(data)
            g.buffered += len(data)
            g.cv.notify_all()

    def close(self) -> None:
        """Take no more blocks and release the ones held (the part's request is over)."""
        g = self._gate
        with g.cv:
            self._detach_locked()

    def _detach_locked(self) -> None:
        self._detached = True
        if self._blocks:
            self._gate.buffered -= sum(len(b) for b in self._blocks)
            self._blocks.clear()
            self._gate.cv.notify_all()

    # called by the sender (httpx iterates the body) -------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        g = self._gate
        with g.cv:
            retry, self._iterated = self._iterated, True
            if retry:
                self._detach_locked()
        if retry:
            return read_range(self.fd, self.offset, self.length, part=self.part_number)
        return self._first_pass()

    def _first_pass(self) -> Iterator[bytes]:
        g = self._gate
        sent = 0
        while sent < self.length:
            with g.cv:
                while not self._blocks:
                    if g.aborted or self._detached:
                        raise Aborted()
                    g.cv.wait()
                data = self._blocks.popleft()
                g.buffered -= len(data)
                g.cv.notify_all()
            sent += len(data)
            yield data


@dataclass
class PassResult:
    sha256: str
    parts_sent: int
    stopped: BaseException | None  # the ``stop_on`` error that ended the sending, if any


def run_pass(
    fd: int,
    size: int,
    chunk_size: int,
    missing: set[int],
    send: Callable[[int, PartStream], object],
    *,
    concurrency: int,
    on_part_done: Callable[[int, int], None] | None = None,
    stop_on: tuple[type[BaseException], ...] = (),
    read_ahead: int = READ_AHEAD,
) -> PassResult:
    """Read the whole file once, hash it, and ``send(n, body)`` each part in ``missing``.

    A ``stop_on`` error from a part (e.g. the session was completed elsewhere) stops the sending
    but not the reading: the hash is still complete. Any other error is re-raised at once.
    """
    total = -(-size // chunk_size)
    workers = max(1, min(int(concurrency or 1), len(missing) or 1))
    gate = _Gate(max(BLOCK, min(read_ahead, workers * chunk_size)))
    hasher = hashlib.sha256()
    open_parts: dict[int, tuple[Future[object], PartStream]] = {}
    state = {"sent": 0, "stopped": None}

    def finished(n: int) -> None:
        with gate.cv:
            gate.done.append(n)
            gate.cv.notify_all()

    def drain() -> None:
        while True:
            with gate.cv:
                if not gate.done:
                    return
                n = gate.done.popleft()
            fut, stream = open_parts.pop(n)
            stream.close()
            exc = fut.exception()
            if exc is not None:
                if stop_on and isinstance(exc, stop_on):
                    state["stopped"] = state["stopped"] or exc
                    continue
                raise exc
            state["sent"] += 1
            if on_part_done is not None:
                on_part_done(n, stream.length)

    def wait_until(ready: Callable[[], bool]) -> None:
        while True:
            drain()
            if ready():
                return
            with gate.cv:
                if not gate.done and not ready():
                    gate.cv.wait(0.5)

    executor = (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sophon-upload") if missing else None
    )
    try:
        for n in range(total):
            offset, length = part_range(n, chunk_size, size)
            stream: PartStream | None = None
            if n in missing and state["stopped"] is None and executor is not None:
                wait_until(lambda: len(open_parts) < workers)
                if state["stopped"] is None:
                    stream = PartStream(gate, fd, offset, length, n)
                    fut = executor.submit(send, n, stream)
                    open_parts[n] = (fut, stream)
                    fut.add_done_callback(lambda _f, n=n: finished(n))
            for data in read_range(fd, offset, length, part=n):
                hasher.update(data)
                if stream is not None:
                    stream.feed(data)
                    if gate.buffered >= gate.limit:
                        wait_until(lambda: gate.buffered < gate.limit)
                elif gate.done:
                    drain()
        wait_until(lambda: not open_parts)
    except BaseException:
        gate.abort()
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return PassResult(hasher.hexdigest(), state["sent"], state["stopped"])  # type: ignore[arg-type]
