"""The whole-request deadline, enforced below httpx on every socket read.

httpx's ``read`` timeout bounds each read, so a server that sends the status line and then one
header byte a second is never cut by it. :class:`DeadlineBackend` wraps httpcore's network
backend: while :func:`bounded` is active, every read (status line, headers and body) and every
connect waits at most until the deadline, and a read past it raises ``httpcore.ReadTimeout`` with
:attr:`Deadline.expired` set, so the caller can tell "the whole request took too long" from an
ordinary per-read timeout. Outside :func:`bounded` (streamed downloads, which have their own
throughput rule) nothing changes.

For a request with an upload body the clock starts at the first read, i.e. once the body is sent:
a part may take longer than the timeout to send on a slow link (each write is bounded by itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore


@dataclass
class Deadline:
    limit: float
    #: monotonic time the request must be done by; None until the first read when it has a body
    at: float | None = None
    expired: bool = False

    def remaining(self, timeout: float | None, *, start: bool) -> float | None:
        """``timeout`` lowered to what is left; raises ReadTimeout (and sets expired) once past."""
        if self.at is None:
            if not start:
                return timeout
            self.at = time.monotonic() + self.limit
        left = self.at - time.monotonic()
        if left <= 0:
            self.expired = True
            raise httpcore.ReadTimeout(f"the request took longer than {self.limit:g} s")
        return left if timeout is None else min(timeout, left)


_current: ContextVar[Deadline | None] = ContextVar("sophon_request_deadline", default=None)


@contextmanager
def bounded(limit: float, *, start_now: bool = True) -> Iterator[Deadline]:
    """Bound every read of the requests made inside to ``limit`` seconds in all (from now, or from
    the first read when ``start_now`` is False)."""
    deadline = Deadline(limit, at=time.monotonic() + limit if start_now else None)
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


def _read_timeout(timeout: float | None) -> float | None:
    deadline = _current.get()
    return timeout if deadline is None else deadline.remaining(timeout, start=True)


def _connect_timeout(timeout: float | None) -> float | None:
    deadline = _current.get()
    return timeout if deadline is None else deadline.remaining(timeout, start=False)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        bound = _read_timeout(timeout)
        try:
            return self._inner.read(max_bytes, bound)
        except httpcore.ReadTimeout:
            deadline = _current.get()
            if deadline is not None and bound != timeout:  # cut by the deadline, not the per-read limit
                deadline.expired = True
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _connect_timeout(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _connect_timeout(timeout), local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.connect_unix_socket(path, _connect_timeout(timeout), socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install(transport: Any) -> bool:
    """Put the deadline under an httpx transport built by httpx (HTTPTransport: its httpcore pool,
    proxies included). A custom transport is left alone (False)."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:
        return False
    if not isinstance(backend, DeadlineBackend):
        pool._network_backend = DeadlineBackend(backend)  # type: ignore[union-attr]
    return True


def install_on_client(client: Any) -> None:
    """:func:`install` on an ``httpx.Client``'s default transport and its mounts (env proxies)."""
    for transport in [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]:
        if transport is not None:
            install(transport)


__all__ = ["Deadline", "DeadlineBackend", "bounded", "install", "install_on_client"]
