"""Request headers are bounded in time (``header_timeout_seconds``, ``headertime.py``): a client that
sends half a request line, or nothing, or trickles its headers, gets a 408 and its connection is
closed. Before the bound uvicorn never closed such a connection (its keep-alive timer is cancelled
by the first byte, and a new connection has none). Each read below waits at most ``WAIT`` seconds,
far longer than the bound: a server that never closes fails it with socket.timeout; nothing here
asserts on how long anything took."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import pytest

from sophon_cli.server.config import HEADER_TIMEOUT, HEADER_TIMEOUT_ENV, ServerConfig

BOUND = 1.0  # short for the test
WAIT = 60.0


@pytest.fixture
def srv(make_server):
    return make_server(header_timeout_seconds=BOUND)


def _connect(srv) -> socket.socket:
    u = urlsplit(srv.url)
    sock = socket.create_connection((u.hostname, u.port), timeout=WAIT)
    return sock


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    reply = b""
    while True:
        got = sock.recv(65536)
        if not got:
            return reply
        reply += got


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


@pytest.mark.timeout(120)
def test_half_a_request_line_then_a_stall_gets_a_408_and_the_connection_closed(srv):
    with _connect(srv) as sock:
        sock.sendall(b"GET /heal")
        reply = _until_closed(sock)
    assert _status(reply) == 408, reply
    head = reply.partition(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in head
    assert b"send the request again" in reply


@pytest.mark.timeout(120)
def test_a_connection_that_never_sends_a_byte_is_closed(srv):
    with _connect(srv) as sock:
        reply = _until_closed(sock)
    assert _status(reply) == 408, reply


@pytest.mark.timeout(120)
def test_headers_that_trickle_in_are_cut_like_a_stall(srv):
    """More bytes never push the deadline back."""
    stop = threading.Event()
    with _connect(srv) as sock:

        def trickle() -> None:
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
                if stop.wait(0.05):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            reply = _until_closed(sock)
        finally:
            stop.set()
            sender.join(timeout=10)
    assert _status(reply) == 408, reply


@pytest.mark.timeout(120)
def test_a_kept_alive_connection_is_bounded_again_after_each_response(srv):
    with _connect(srv) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        head, _, body = first.partition(b"\r\n\r\n")
        length = int(next(ln for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:"))[15:])
        while len(body) < length:
            body += sock.recv(65536)
        assert _status(first) == 200 and len(body) == length
        sock.sendall(b"GET /hea")  # the second request stalls inside its request line
        reply = body[length:] + _until_closed(sock)
    assert _status(reply) == 408, reply


def test_complete_requests_are_answered_as_before(srv):
    import httpx

    with httpx.Client(base_url=srv.url, timeout=WAIT) as client:
        for _ in range(3):  # on one kept-alive connection
            assert client.get("/healthz").status_code == 200


def test_the_setting_defaults_to_60_s_and_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(HEADER_TIMEOUT_ENV, raising=False)
    assert HEADER_TIMEOUT == 60 and ServerConfig(data_dir=tmp_path).header_timeout_seconds == 60
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "7.5")
    assert ServerConfig(data_dir=tmp_path).header_timeout_seconds == 7.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(HEADER_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=HEADER_TIMEOUT_ENV):
            ServerConfig(data_dir=tmp_path)
