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
WAKE = 4 * 1024 * 1024  # a waiting sender is woken when this much of its part is ready


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
    """The state shared by the reader and the senders, guarded by one lock.

    Every hand-off between threads is a wake-up, and on a small (virtual) machine each costs about
    as much as reading a block, so both sides hand over in batches: a waiting sender is woken when
    its part has ``wake`` bytes ready (or all of them), and a reader that waits for room is woken
    once the buffer has drained to ``low``, not after every block.
    """

    def __init__(self, limit: int) -> None:
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)  # the reader waits here (room, or a part done)
        self.limit = limit
        self.low = max(0, limit - max(BLOCK, limit // 4))
        self.wake = max(1, min(WAKE, limit // 4))
        self.buffered = 0
        self.reader_waiting = False
        self.aborted = False
        self.done: deque[int] = deque()  # part numbers whose request finished (any outcome)
        self.streams: set[PartStream] = set()

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            self.room.notify_all()
            for stream in self.streams:
                stream.cv.notify_all()

    def released_locked(self, n: int) -> None:
        """``n`` buffered bytes were sent or dropped (lock held)."""
        self.buffered -= n
        if self.reader_waiting and self.buffered <= self.low:
            self.room.notify()

    def wait_locked(self, timeout: float) -> None:
        self.reader_waiting = True
        try:
            self.room.wait(timeout)
        finally:
            self.reader_waiting = False


class PartStream:
    """The body of one part during the pass.

    The first iteration yields the reader's blocks as they arrive (and drops each once it is sent).
    A second iteration is a retry: it re-reads the range from disk, and the blocks the reader still
    hands over are dropped.
    """

    def __init__(self, gate: _Gate, fd: int, offset: int, length: int, part_number: int) -> None:
        self._gate = gate
        self.cv = threading.Condition(gate.lock)  # this part's sender waits here for blocks
        self.fd = fd
        self.offset = offset
        self.length = length
        self.part_number = part_number
        self._blocks: deque[bytes] = deque()
        self._held = 0  # bytes in _blocks
        self._fed = 0  # bytes the reader handed over
        self._waiting = False  # the sender waits for blocks
        self._iterated = False
        self._detached = False  # a retry re-reads from disk; closed parts take nothing either
        with gate.lock:
            gate.streams.add(self)

    def __len__(self) -> int:
        return self.length

    # called by the reader ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        g = self._gate
        with g.lock:
            if self._detached:
                return
            self._blocks.append(data)
            self._held += len(data)
            self._fed += len(data)
            g.buffered += len(data)
            if self._waiting and (self._held >= g.wake or self._fed >= self.length):
                self.cv.notify()

    def kick_locked(self) -> None:
        """Wake a waiting sender for whatever it has (the reader is about to wait; lock held)."""
        if self._waiting and self._blocks:
            self.cv.notify()

    def close(self) -> None:
        """Take no more blocks and release the ones held (the part's request is over)."""
        with self._gate.lock:
            self._detach_locked()
            self._gate.streams.discard(self)

    def _detach_locked(self) -> None:
        self._detached = True
        self.cv.notify_all()
        self._blocks.clear()
        held, self._held = self._held, 0  # including a block being sent right now
        if held:
            self._gate.released_locked(held)

    # called by the sender (httpx iterates the body) -------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        g = self._gate
        with g.lock:
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
            with g.lock:
                while not self._blocks:
                    if g.aborted or self._detached:
                        raise Aborted()
                    self._waiting = True
                    try:
                        self.cv.wait()
                    finally:
                        self._waiting = False
                data = self._blocks.popleft()
            sent += len(data)
            yield data
            with g.lock:  # sent: its bytes no longer count against the read-ahead
                if not self._detached:
                    self._held -= len(data)
                    g.released_locked(len(data))


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
        with gate.lock:
            gate.done.append(n)
            gate.room.notify()

    def drain() -> None:
        while True:
            with gate.lock:
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

    def wait_until(ready: Callable[[], bool], feeding: PartStream | None = None) -> None:
        while True:
            drain()
            if ready():
                return
            with gate.lock:
                if not gate.done and not ready():
                    if feeding is not None:
                        feeding.kick_locked()
                    gate.wait_locked(0.5)

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
                        wait_until(lambda: gate.buffered <= gate.low, stream)
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
