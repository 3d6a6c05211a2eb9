"""A bound on the time a request's headers may take to arrive, in the server's httptools protocol.

uvicorn bounds none of it: its keep-alive timer (5 s) is cancelled by the first byte received, and
a new connection has no timer at all, so a client that sends half a request line (or nothing)
holds its connection, and a slot in the server's connection set, forever. The body has its own
bounds once the headers are in (``frame.py``, ``bodyrate.py``).

:class:`HeaderDeadlineProtocol` arms one timer of ``header_timeout`` seconds when a connection
opens, when a response completes on a kept-alive connection and when a request's first byte
arrives while none is armed, and cancels it when that request's headers are complete. An armed
timer is never pushed back by more bytes: a trickle of header bytes is cut as surely as a stall.
On expiry the client gets ``408 Request Timeout`` (``Connection: close``) and the connection is
closed; if a response to an earlier (pipelined) request is still being sent, nothing is written
in the middle of it: the connection closes when that response ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import HEADER_TIMEOUT  # and its setting, ServerConfig.header_timeout_seconds

_BODY = b"the request headers did not arrive in time; send the request again\n"
_RESPONSE_408 = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_BODY)).encode("ascii") + b"\r\n"
    b"connection: close\r\n"
    b"\r\n" + _BODY
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with the header deadline of the module doc (``header_timeout``
    seconds, a keyword of the constructor: the runner passes it with ``functools.partial``)."""

    def __init__(self, *args: Any, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = float(header_timeout)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # a pipelined request's first byte, while a response is under way

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle, kept alive, nothing pipelined
            self._arm_header_timer()

    def _headers_too_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # an earlier request's response is being sent: end the connection after it, not inside it
            cycle.keep_alive = False
            return
        self._unset_keepalive_if_required()
        self.transport.write(_RESPONSE_408)
        self.transport.close()
