"""Large bodies through the standard library's ``http.client``: the pieces both directions share.

Why: httpx moves a body through h11 and about thirty Python frames per block. Receiving, it reads
64 KiB per socket read; sending, h11 joins every block into a fresh ``bytes`` before the socket
sees it (a copy and a new allocation per block). ``http.client`` reads or writes a whole block in
one system call from a buffer we reuse. Two requests take this path: the GET of a signed download
URL (``direct_get``) and the PUT of an upload part (``SophonClient.request`` with a
:class:`SendableBody`), and only when it is the request httpx would make: no custom transport, no
proxy from the environment (unless the URL is on loopback, where the client never uses one),
``http``/``https`` only, TLS with httpx's own default context (``httpx.create_ssl_context()``:
same CA bundle, same ``SSL_CERT_FILE``/``SSL_CERT_DIR``). Anything else goes through httpx.

Errors of the connection (refused, reset, timeout, TLS) are raised as the
:class:`httpx.TransportError` subclasses httpx would raise, so the one retry policy (and the
malformed-reply rules) treat them like httpx's own.
"""

from __future__ import annotations

import heapq
import http.client
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pragma: no cover
    import ssl

    import httpx

#: an idle keep-alive connection older than this is not reused (httpx's keepalive_expiry)
KEEPALIVE_EXPIRY = 30.0


class SendableBody:
    """A request body of known length that writes itself to a socket (:meth:`send_to`) from
    buffers it reuses, or is iterated as ``bytes`` blocks (the httpx path). Every use sends the
    whole body again from its start (a retried request)."""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def send_to(self, sock: socket.socket) -> None:  # pragma: no cover - abstract
        """``sendall`` the whole body on ``sock`` (its timeout bounds every write)."""
        raise NotImplementedError


def usable(url: str, *, custom_transport: bool) -> bool:
    """Whether a request to ``url`` can go through http.client and be the request httpx would make."""
    if custom_transport:
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.username is not None or parts.password is not None:
        return False  # httpx turns a URL's userinfo into Basic auth; http.client would drop it
    from sophon_cli.client.http import is_loopback

    if is_loopback(url):
        return True  # the client never sends loopback traffic through a proxy
    from urllib.request import getproxies

    return not getproxies()


def connection(
    url: str, *, timeout: float, ssl_context: Callable[[], ssl.SSLContext]
) -> http.client.HTTPConnection:
    """A (not yet connected) connection to the origin of ``url``; ``timeout`` bounds the connect
    and every read and write."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl_context()
        )
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)


def target(url: str) -> str:
    """The request target (path and query) of ``url``."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def check_lengths(headers: httpx.Headers, request: httpx.Request) -> set[str]:
    """The Content-Length values of a reply; conflicting or non-numeric ones are refused as h11
    refuses them (the same malformed-reply error on both paths)."""
    import httpx

    lengths = {v.strip() for v in headers.get_list("content-length")}
    if lengths and (len(lengths) > 1 or not all(v.isdigit() for v in lengths)):
        raise httpx.RemoteProtocolError(
            f"invalid or conflicting Content-Length {sorted(lengths)!r}", request=request
        )
    return lengths


class Pool:
    """Idle keep-alive connections to one origin, for requests made one after another by several
    threads. A connection is reused only when its peer has not closed it (nothing to read) and it
    has been idle for less than :data:`KEEPALIVE_EXPIRY`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._closed = False

    def take(self) -> http.client.HTTPConnection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn, since = self._idle.pop()
            if now - since < KEEPALIVE_EXPIRY and _still_open(conn):
                return conn
            conn.close()

    def put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for conn, _ in idle:
            conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle connection is reusable when nothing can be read from it: a readable idle socket
    means the peer closed it (or sent bytes nobody asked for)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class HeadWatchdog:
    """Shut the connection's socket down once ``seconds`` have passed, unless cancelled first.

    All watchdogs share one daemon thread that sleeps until the earliest deadline: arming and
    cancelling one is a heap push and a flag (an upload arms one per part; a thread of its own
    for each cost a thread start and two wake-ups per part)."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._conn = conn
        self._lock = threading.Lock()
        self._done = False
        _WATCH.arm(time.monotonic() + seconds, self)

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


class _Watch:
    """The thread behind every :class:`HeadWatchdog` (started on first use)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the thread does not survive a fork

    def _reset(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, HeadWatchdog]] = []
        self._count = 0
        self._thread: threading.Thread | None = None

    def arm(self, at: float, dog: HeadWatchdog) -> None:
        with self._cv:
            self._count += 1
            heapq.heappush(self._heap, (at, self._count, dog))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sophon-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is dog:
                self._cv.notify()  # a new earliest deadline

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    while self._heap and self._heap[0][2]._done:
                        heapq.heappop(self._heap)  # cancelled: nothing to do
                    if not self._heap:
                        self._cv.wait()
                        continue
                    left = self._heap[0][0] - time.monotonic()
                    if left <= 0:
                        dog = heapq.heappop(self._heap)[2]
                        break
                    self._cv.wait(left)
            dog._cut()


_WATCH = _Watch()


def transport_error(
    exc: BaseException, request: httpx.Request, *, reading: bool, writing: bool = False
) -> httpx.TransportError:
    """The httpx error that means the same: dropped or unreachable (retried), or a reply that is
    not HTTP (``RemoteProtocolError``: classified as malformed, not retried). ``writing``: the
    failure came while sending the request (its body)."""
    import httpx

    text = f"{type(exc).__name__}: {exc}"
    kind: type[httpx.TransportError]
    if isinstance(exc, TimeoutError):
        kind = httpx.WriteTimeout if writing else httpx.ReadTimeout if reading else httpx.ConnectTimeout
    elif writing and isinstance(exc, OSError):
        kind = httpx.WriteError
    elif isinstance(exc, (OSError, http.client.IncompleteRead)):  # RemoteDisconnected is an OSError
        dropped = reading or isinstance(exc, http.client.HTTPException)
        kind = httpx.ReadError if dropped else httpx.ConnectError
    else:
        kind = httpx.RemoteProtocolError  # a bad status line, an overlong header, ...
    return kind(text, request=request)


__all__ = [
    "KEEPALIVE_EXPIRY",
    "HeadWatchdog",
    "Pool",
    "SendableBody",
    "check_lengths",
    "connection",
    "target",
    "transport_error",
    "usable",
]
