"""uvicorn's httptools protocol, handing each received body chunk to the app without copying it.

uvicorn appends every chunk httptools parses to a ``bytearray`` and gives the app
``bytes(bytearray)``: two copies of every byte of an upload on the event loop (15 % of the
server's CPU with ``on_body``'s concatenation, plus the fresh memory for both). Here the chunks
are kept as they are (``bytes``, immutable, so holding them is safe) and a message is the chunk
itself, or the chunks joined when more than one arrived before the app asked for the next one.
Reading pauses only when more than :data:`BODY_HIGH_WATER` of a body waits for the app.
Everything else (flow control, disconnects, keep-alive, pipelining) is uvicorn's own code.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Reading pauses when this much of a body waits for the app (uvicorn's own limit is 64 KiB, less
# than one 256 KiB socket read: it paused and resumed reading, two epoll_ctl calls and the selector's
# Python around them, for every chunk of an upload).
BODY_HIGH_WATER = 1 << 20


class BodyChunks:
    """The part of a request body received since the app's last ``receive``: what uvicorn's
    cycle keeps in ``body`` (it appends with ``+=``, measures with ``len`` and hands over
    ``bytes(body)``)."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def __iadd__(self, chunk: bytes) -> BodyChunks:
        self.chunks.append(chunk)
        self.size += len(chunk)
        return self

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        if len(self.chunks) == 1:
            return self.chunks[0]
        return b"".join(self.chunks)


class ChunkedBodyProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with the body kept as :class:`BodyChunks` (passed to uvicorn as
    its ``http`` protocol class)."""

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle.body) is not BodyChunks:  # a new request, or the app took the last message
            held = bytes(cycle.body)
            cycle.body = BodyChunks()
            if held:
                cycle.body += held
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()
