"""The body of a signed download URL, received by the standard library's ``http.client``.

Why: httpx receives a body in 64 KiB socket reads, each passed up through h11 and about thirty
Python frames. For a large download that costs about three times the CPU of ``http.client``,
whose ``read1`` is one socket read of up to 1 MiB straight into the returned bytes (measured on 2
cores: 0.33-0.49 s against 0.10-0.14 s of CPU per 512 MiB, and half the wall time).

Only the plain GET of the signed URL takes this path, and only when it is the same request httpx
would make: no custom transport, no proxy from the environment (unless the URL is on loopback,
where the client never uses one), ``http``/``https`` only. TLS uses httpx's own default context
(``httpx.create_ssl_context()``: same CA bundle, same ``SSL_CERT_FILE``/``SSL_CERT_DIR``). The
status and headers come back as an :class:`httpx.Response`, so the caller's checks and error
parsing are the same on both paths. Whatever this path does not handle (a redirect, a
content-encoding) is answered with ``None``: the caller then makes the request with httpx.

Errors of the connection (refused, reset, timeout, TLS) are raised as the :class:`httpx.TransportError`
subclasses httpx would raise, so the one retry policy (and the malformed-reply rules) treat them
like httpx's own.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    import httpx

ERROR_BODY_LIMIT = 1 << 20  # an error document is small; never read more than this of one


def usable(url: str, *, custom_transport: bool) -> bool:
    """Whether a GET of ``url`` can go through http.client and be the request httpx would make."""
    if custom_transport:
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    from sophon_cli.client.http import is_loopback

    if is_loopback(url):
        return True  # the client never sends loopback traffic through a proxy
    from urllib.request import getproxies

    return not getproxies()


class DirectResponse:
    """An open response: ``response`` carries the status and headers; :meth:`readinto` the body."""

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
            raise _transport_error(exc, self.request, reading=True) from exc

    def read_error_body(self) -> httpx.Response:
        """The response with its (bounded) body read, for error parsing."""
        import httpx

        try:
            content = self._raw.read(ERROR_BODY_LIMIT)
        except (OSError, http.client.HTTPException) as exc:
            raise _transport_error(exc, self.request, reading=True) from exc
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

    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = {"Accept-Encoding": "identity", **headers}
    request = httpx.Request("GET", url, headers=sent)  # what was sent, for -v and error reports
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    # every read is bounded by ``timeout``, and so is the whole head of the reply: a server that
    # trickles its status line and headers a byte at a time is cut when ``timeout`` has passed
    watchdog = _HeadWatchdog(conn, timeout)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
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
        raise _transport_error(exc, request, reading=False) from exc
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
    lengths = {v.strip() for v in h.get_list("content-length")}
    if lengths and (len(lengths) > 1 or not all(v.isdigit() for v in lengths)):
        direct.close()  # h11 refuses these too: the same malformed-reply error on both paths
        raise httpx.RemoteProtocolError(
            f"invalid or conflicting Content-Length {sorted(lengths)!r}", request=request
        )
    encoding = h.get("content-encoding", "identity").strip().lower()
    if 300 <= raw.status < 400 or encoding not in ("", "identity") or not lengths or "transfer-encoding" in h:
        direct.close()  # a redirect, a coded, chunked or unsized body: httpx's own handling
        return None
    return direct


class _HeadWatchdog:
    """Shut the connection's socket down once ``seconds`` have passed, unless cancelled first."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._conn = conn
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            sock = self._conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _transport_error(exc: BaseException, request: httpx.Request, *, reading: bool) -> httpx.TransportError:
    """The httpx error that means the same: dropped or unreachable (retried), or a reply that is
    not HTTP (``RemoteProtocolError``: classified as malformed, not retried)."""
    import httpx

    text = f"{type(exc).__name__}: {exc}"
    kind: type[httpx.TransportError]
    if isinstance(exc, TimeoutError):
        kind = httpx.ReadTimeout if reading else httpx.ConnectTimeout
    elif isinstance(exc, (OSError, http.client.IncompleteRead)):  # RemoteDisconnected is an OSError
        dropped = reading or isinstance(exc, http.client.HTTPException)
        kind = httpx.ReadError if dropped else httpx.ConnectError
    else:
        kind = httpx.RemoteProtocolError  # a bad status line, an overlong header, ...
    return kind(text, request=request)
