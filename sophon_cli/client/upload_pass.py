"""One read pass over a file: every byte read once, in order, hashed, and handed to its part.

:func:`run_pass` reads the file sequentially in 1 MiB blocks on the calling thread, feeds every
block to one sha256, and hands the blocks of each part the server still lacks to a worker thread
that is already sending that part (so the first byte goes out as soon as the first block is read).
Parts the server already holds are read and hashed, not sent. Up to ``concurrency`` parts are in
flight at once; the blocks read but not yet sent never exceed ``READ_AHEAD`` bytes (the reader
waits), so memory stays flat whatever the file size. Blocks are read (``preadv``) into buffers
that are reused once sent, and a sender writes a block to its socket straight from its buffer
(:meth:`PartStream.send_to`); only the httpx fallback path iterates the part as ``bytes``.

A part whose request is retried is re-read from disk for the new attempt (its blocks were sent and
dropped), not re-hashed: if the file changed in between, the server's sha256 at ``complete`` no
longer matches the local one, and the caller finds out.

Progress and errors reach the calling thread: ``on_part_done(part_number, length)`` runs there after
each part the server acknowledged; the first failure of a worker is re-raised there.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sophon_cli.client.content import ShortRead
from sophon_cli.client.direct import SendableBody

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


def read_into(
    fd: int, buf: bytearray, offset: int, length: int, *, part: int | None = None
) -> Iterator[memoryview]:
    """The bytes ``[offset, offset + length)`` of an open file, read into ``buf`` one piece at a
    time (each view is valid until the next); :class:`ShortRead` when the file ends first."""
    view = memoryview(buf)
    pos, end = offset, offset + length
    while pos < end:
        n = os.preadv(fd, [view[: min(len(buf), end - pos)]], pos)
        if not n:
            raise ShortRead(part)
        pos += n
        yield view[:n]


class PartSlice(SendableBody):
    """Bytes ``[offset, offset + length)`` of an open file, streamed in ``block``-sized reads.

    Re-usable: every use reads the range again from its start, so a retried request re-sends the
    whole part. ``len()`` is the part's length (sent as ``Content-Length``).
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

    def send_to(self, sock: socket.socket) -> None:
        buf = bytearray(min(self.block, max(1, self.length)))
        for view in read_into(self.fd, buf, self.offset, self.length, part=self.part_number):
            sock.sendall(view)


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
        self.free: list[bytearray] = []  # block buffers sent or dropped, for the reader to reuse

    def buffer(self) -> bytearray:
        """A block buffer for the reader: a reused one, or a new one while the read-ahead grows."""
        with self.lock:
            if self.free:
                return self.free.pop()
        return bytearray(BLOCK)

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            self.room.notify_all()
            for stream in self.streams:
                stream.cv.notify_all()
                if stream.sock is not None:  # blocked in a write, maybe for the whole timeout
                    try:
                        stream.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def released_locked(self, n: int, buf: bytearray | None = None) -> None:
        """``n`` buffered bytes (the block in ``buf``) were sent or dropped (lock held)."""
        self.buffered -= n
        if buf is not None:
            self.free.append(buf)
        if self.reader_waiting and self.buffered <= self.low:
            self.room.notify()

    def wait_locked(self, timeout: float) -> None:
        self.reader_waiting = True
        try:
            self.room.wait(timeout)
        finally:
            self.reader_waiting = False


class PartStream(SendableBody):
    """The body of one part during the pass.

    The first use (:meth:`send_to`, or iterating it) sends the reader's blocks as they arrive and
    gives each buffer back once it is sent. A second use is a retry: it re-reads the range from
    disk, and the blocks the reader still hands over are dropped.
    """

    def __init__(self, gate: _Gate, fd: int, offset: int, length: int, part_number: int) -> None:
        self._gate = gate
        self.cv = threading.Condition(gate.lock)  # this part's sender waits here for blocks
        self.fd = fd
        self.offset = offset
        self.length = length
        self.part_number = part_number
        self._blocks: deque[tuple[bytearray, int]] = deque()
        self._held = 0  # bytes in _blocks (and the block being sent)
        self._fed = 0  # bytes the reader handed over
        self._waiting = False  # the sender waits for blocks
        self._used = False
        self.sock: socket.socket | None = None  # while sent by send_to (an abort shuts it down)
        self._detached = False  # a retry re-reads from disk; closed parts take nothing either
        with gate.lock:
            gate.streams.add(self)

    def __len__(self) -> int:
        return self.length

    # called by the reader ----------------------------------------------------------------------

    def feed(self, buf: bytearray, n: int) -> None:
        """Hand over the block ``buf[:n]``; the buffer is the stream's until it is sent or dropped."""
        g = self._gate
        with g.lock:
            g.buffered += n
            if self._detached:
                g.released_locked(n, buf)
                return
            self._blocks.append((buf, n))
            self._held += n
            self._fed += n
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
        g = self._gate
        while self._blocks:
            buf, n = self._blocks.popleft()
            self._held -= n
            g.released_locked(n, buf)
        held, self._held = self._held, 0  # a block being sent right now: its sender gives it back
        if held:
            g.released_locked(held)

    # called by the sender ------------------------------------------------------------------------

    def _first_use(self) -> bool:
        with self._gate.lock:
            first, self._used = not self._used, True
            if not first:
                self._detach_locked()
        return first

    def send_to(self, sock: socket.socket) -> None:
        """Send the part on ``sock``, each block straight from its buffer; a second call re-reads
        the part from disk. While it sends, an abort of the pass shuts ``sock`` down, so a sender
        blocked on a server that stopped reading returns at once."""
        first = self._first_use()
        with self._gate.lock:
            if self._gate.aborted:
                raise Aborted()
            self.sock = sock
        try:
            if not first:
                PartSlice(self.fd, self.offset, self.length, part_number=self.part_number).send_to(sock)
                return
            for buf, n in self._take_blocks():
                try:
                    sock.sendall(memoryview(buf)[:n])
                finally:
                    self._sent(buf, n)
        except OSError:
            if self._gate.aborted:  # our own shutdown: stop, do not retry
                raise Aborted() from None
            raise
        finally:
            with self._gate.lock:
                self.sock = None

    def __iter__(self) -> Iterator[bytes]:
        if not self._first_use():
            return read_range(self.fd, self.offset, self.length, part=self.part_number)
        return self._copies()

    def _copies(self) -> Iterator[bytes]:
        for buf, n in self._take_blocks():
            data = bytes(memoryview(buf)[:n])
            self._sent(buf, n)
            yield data

    def _take_blocks(self) -> Iterator[tuple[bytearray, int]]:
        g = self._gate
        taken = 0
        while taken < self.length:
            with g.lock:
                while not self._blocks:
                    if g.aborted or self._detached:
                        raise Aborted()
                    self._waiting = True
                    try:
                        self.cv.wait()
                    finally:
                        self._waiting = False
                buf, n = self._blocks.popleft()
            taken += n
            yield buf, n

    def _sent(self, buf: bytearray, n: int) -> None:
        """The block is sent (or its request failed): its bytes no longer count against the
        read-ahead and its buffer can be read into again."""
        with self._gate.lock:
            if not self._detached:
                self._held -= n
                self._gate.released_locked(n, buf)
            # detached meanwhile: its bytes were released then; the buffer is simply dropped


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

    scratch: bytearray | None = None  # for the parts read and hashed only
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
            if stream is None:  # read and hash only, into one buffer
                scratch = scratch or bytearray(BLOCK)
                for view in read_into(fd, scratch, offset, length, part=n):
                    hasher.update(view)
                    if gate.done:
                        drain()
                continue
            pos, end = offset, offset + length
            while pos < end:
                buf = gate.buffer()
                got = os.preadv(fd, [memoryview(buf)[: min(BLOCK, end - pos)]], pos)
                if not got:
                    raise ShortRead(n)
                pos += got
                hasher.update(memoryview(buf)[:got])
                stream.feed(buf, got)
                if gate.buffered >= gate.limit:
                    wait_until(lambda: gate.buffered <= gate.low, stream)
        wait_until(lambda: not open_parts)
    except BaseException:
        gate.abort()
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return PassResult(hasher.hexdigest(), state["sent"], state["stopped"])  # type: ignore[arg-type]
