"""The body of a signed download URL, received by the standard library's ``http.client``.

Why: httpx receives a body in 64 KiB socket reads, each passed up through h11 and about thirty
Python frames. For a large download that costs about three times the CPU of ``http.client``,
whose ``read1`` is one socket read of up to 1 MiB straight into the returned bytes (measured on 2
cores: 0.33-0.49 s against 0.10-0.14 s of CPU per 512 MiB, and half the wall time).

Only the plain GET of the signed URL takes this path, and only when it is the same request httpx
would make (``direct.usable``: no custom transport, no proxy, http/https, httpx's own TLS context).
The status and headers come back as an :class:`httpx.Response`, so the caller's checks and error
parsing are the same on both paths. Whatever this path does not handle (a redirect, a
content-encoding) is answered with ``None``: the caller then makes the request with httpx.
Connection errors are raised as the httpx errors that mean the same (``direct.transport_error``).
"""

from __future__ import annotations

import http.client
from typing import TYPE_CHECKING

from sophon_cli.client.direct import HeadWatchdog, check_lengths, connection, target, transport_error
from sophon_cli.client.direct import usable as usable  # re-exported: the rule of both directions

if TYPE_CHECKING:  # pragma: no cover
    import ssl
    from collections.abc import Callable

    import httpx

ERROR_BODY_LIMIT = 1 << 20  # an error document is small; never read more than this of one


class DirectResponse:
    """An open response: ``response`` carries the status and headers; :meth:`read1` and
    :meth:`readinto1` the body."""

    def __init__(
        self, conn: http.client.HTTPConnection, raw: http.client.HTTPResponse, request: httpx.Request
    ) -> None:
        import httpx

        self._conn = conn
        self._raw = raw
        self.request = request
        self.response = httpx.Response(raw.status, headers=raw.getheaders(), request=request)

    def read1(self, limit: int) -> bytes:
        """The next bytes of the body as they arrive (one socket read, at most ``limit``); ``b""``
        at the end (or when the server closed early: the caller compares with the expected size).
        Never waits for ``limit`` bytes: on a slow link they reach the disk as they come."""
        try:
            return self._raw.read1(limit)
        except (OSError, http.client.HTTPException) as exc:
            raise transport_error(exc, self.request, reading=True) from exc

    def readinto1(self, buf: memoryview) -> int:
        """:meth:`read1` into ``buf``: one socket read straight into it (no bytes object, no copy)
        once the few body bytes that came with the head are used up; 0 at the end."""
        raw = self._raw
        fp = raw.fp  # the response's buffered reader: its readinto1 reads the socket into buf
        if fp is None:
            return 0
        if raw.length is not None and len(buf) > raw.length:
            buf = buf[: raw.length]
        if not len(buf):
            return 0
        try:
            n = fp.readinto1(buf)
        except (OSError, http.client.HTTPException) as exc:
            raise transport_error(exc, self.request, reading=True) from exc
        if raw.length is not None:
            raw.length -= n  # as read1 counts, so that read1/read see the same rest of the body
        return n

    def read_error_body(self) -> httpx.Response:
        """The response with its (bounded) body read, for error parsing."""
        import httpx

        try:
            content = self._raw.read(ERROR_BODY_LIMIT)
        except (OSError, http.client.HTTPException) as exc:
            raise transport_error(exc, self.request, reading=True) from exc
        r = self.response
        return httpx.Response(r.status_code, headers=r.headers, content=content, request=r.request)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            self._conn.close()

    def __enter__(self) -> DirectResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_get(
    url: str,
    headers: dict[str, str],
    *,
    timeout: float,
    ssl_context: Callable[[], ssl.SSLContext],
) -> DirectResponse | None:
    """Send ``GET url`` and read the status and headers; ``None`` when httpx must handle it."""
    import httpx

    sent = {"Accept-Encoding": "identity", **headers}
    request = httpx.Request("GET", url, headers=sent)  # what was sent, for -v and error reports
    conn = connection(url, timeout=timeout, ssl_context=ssl_context)
    # every read is bounded by ``timeout``, and so is the whole head of the reply: a server that
    # trickles its status line and headers a byte at a time is cut when ``timeout`` has passed
    watchdog = HeadWatchdog(conn, timeout)
    try:
        conn.putrequest("GET", target(url), skip_accept_encoding=True)
        for name, value in sent.items():
            conn.putheader(name, value)
        conn.endheaders()
        raw = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        if watchdog.fired:
            raise httpx.ReadTimeout(
                f"the server did not send the head of its reply within {timeout:g} s", request=request
            ) from exc
        raise transport_error(exc, request, reading=False) from exc
    except BaseException:
        conn.close()
        raise
    finally:
        watchdog.cancel()
    if watchdog.fired:  # cut mid-head: what was parsed is not the server's whole head
        conn.close()
        raise httpx.ReadTimeout(
            f"the server did not send the head of its reply within {timeout:g} s", request=request
        )
    direct = DirectResponse(conn, raw, request)
    h = direct.response.headers
    try:
        lengths = check_lengths(h, request)
    except httpx.RemoteProtocolError:
        direct.close()
        raise
    encoding = h.get("content-encoding", "identity").strip().lower()
    if 300 <= raw.status < 400 or encoding not in ("", "identity") or not lengths or "transfer-encoding" in h:
        direct.close()  # a redirect, a coded, chunked or unsized body: httpx's own handling
        return None
    return direct
