"""The ASGI zero-copy send extension on uvicorn's httptools protocol: file bodies by ``sendfile``.

uvicorn does not implement the extension (``http.response.zerocopy`` in the ASGI spec's
extensions). Without it, every MiB of a download is read into Python by a worker thread, handed
to the event loop and written to the socket through asyncio's transport, which copies what the
socket does not take at once into its own buffer and moves the rest along after each send. On
the 2-core machine measured, that was 0.7-0.9 CPU-s per GiB sent, on the cores the client
receiving it also needs.

:class:`ZeroCopyProtocol` is the server's httptools protocol (uvicorn's ``HttpToolsProtocol``
with :mod:`.httpbody`'s request bodies and :mod:`.headertime`'s header deadline) with the extension advertised in every request's
``scope["extensions"]``. A ``{"type": "http.response.zerocopy", "file": <binary
file object>, "offset": int, "count": int, "more_body": bool}`` message after the response start
sends ``count`` bytes of the file from ``offset`` with the event loop's ``sendfile`` (the kernel's
``sendfile(2)`` on Linux: the page cache pages go to the socket, nothing passes through Python),
counted against the Content-Length exactly as body messages are. Only the identity-coded,
Content-Length framed body of a GET takes this path; anything else is refused as uvicorn refuses
a bad message (a RuntimeError, i.e. a 500 or a closed connection). The extension is advertised
only where the loop can do it natively; a loop or transport that cannot (uvloop, TLS) answers the
first message with ``SendfileNotAvailableError`` before any byte is sent, and the caller then
sends the same bytes as body messages (:func:`available` says whether a scope offers it).

A client that goes away during a ``sendfile`` ends it with a connection error; the response is
then treated as uvicorn treats any disconnected client: later messages are dropped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from .headertime import HeaderDeadlineProtocol
from .httpbody import ChunkedBodyProtocol

EXTENSION = "http.response.zerocopy"


def available(scope: dict[str, Any]) -> bool:
    """Whether the server offers the zero-copy send extension for this request."""
    return scope.get("type") == "http" and EXTENSION in (scope.get("extensions") or {})


class _Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle plus the ``http.response.zerocopy`` message."""

    async def send(self, message: Any) -> None:
        if message.get("type") != EXTENSION:
            return await super().send(message)
        if self.disconnected:
            return
        if not self.response_started or self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message {EXTENSION!r} outside a response body.")
        if self.chunked_encoding or self.scope["method"] == "HEAD":
            raise RuntimeError(f"ASGI message {EXTENSION!r} needs a Content-Length framed GET body.")
        offset = int(message.get("offset") or 0)
        count = message.get("count")
        if count is None:
            raise RuntimeError(f"ASGI message {EXTENSION!r} without a count.")
        count = int(count)
        if count < 0 or count > self.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if count:
            if self.flow.write_paused:
                await self.flow.drain()
                if self.disconnected:
                    return
            loop = asyncio.get_running_loop()
            try:
                sent = await loop.sendfile(self.transport, message["file"], offset, count, fallback=False)
            except asyncio.SendfileNotAvailableError:
                raise  # nothing was sent: the caller sends body messages instead
            except OSError:
                # the client went away mid-body (reset, broken pipe): as for any disconnect, the
                # rest of the response is dropped
                self.disconnected = True
                self.transport.close()
                return
            self.expected_content_length -= sent
            if sent != count:  # the file is shorter than announced: the response cannot be completed
                self.disconnected = True
                self.transport.close()
                raise RuntimeError("Response content shorter than Content-Length")
        if not message.get("more_body", False):
            await super().send({"type": "http.response.body", "body": b"", "more_body": False})


class ZeroCopyProtocol(ChunkedBodyProtocol, HeaderDeadlineProtocol):
    """The server's httptools protocol (:class:`~.httpbody.ChunkedBodyProtocol`: uvicorn's, with
    request bodies handed over uncopied; :class:`~.headertime.HeaderDeadlineProtocol`: request
    headers bounded in time), plus the zero-copy send extension (see the module doc)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if _native(self.transport):
            self.scope["extensions"] = {**(self.scope.get("extensions") or {}), EXTENSION: {}}

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle and EXTENSION in (cycle.scope.get("extensions") or {}):
            # the cycle was just made and its task not yet started: it runs as the subclass
            cycle.__class__ = _Cycle


def _native(transport: Any) -> bool:
    """A plain (not TLS) socket transport of asyncio's own selector loop: ``loop.sendfile`` is the
    ``sendfile(2)`` system call there."""
    import os

    if not hasattr(os, "sendfile") or transport is None:
        return False
    try:
        from asyncio.selector_events import _SelectorSocketTransport
    except ImportError:  # pragma: no cover
        return False
    return isinstance(transport, _SelectorSocketTransport) and transport.get_extra_info("sslcontext") is None
