"""Upload parts sent through http.client (client/direct.py) from the read pass's reused buffers:
the same headers, retries and errors as the httpx path; idle connections the server closed are not
reused; Ctrl-C cuts a part blocked on a server that stopped reading. Small real servers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from sophon_cli.client.errors import APIError
from sophon_cli.client.http import SophonClient
from sophon_cli.client.upload_pass import BLOCK, PartSlice, run_pass
from tests.client.hostile import HostileServer, send_json, trickle

KEY = "xt_live_DIRECTSECRET123"


class RecordingSocket(socket.socket):
    """One end of a socketpair that notes which buffer each write came from."""

    buffers: set[int]

    def sendall(self, data, flags=0):  # type: ignore[override]
        self.buffers.add(id(memoryview(data).obj))
        return super().sendall(data, flags)


def test_parts_are_sent_from_a_bounded_set_of_reused_buffers(tmp_path):
    chunk = 3 * BLOCK
    data = os.urandom(6 * chunk + 1000)
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    received: dict[int, bytes] = {}
    seen: set[int] = set()
    lock = threading.Lock()

    def send(n, body):
        a, b = socket.socketpair()
        sock = RecordingSocket(fileno=a.detach())
        sock.buffers = set()
        got = bytearray()

        def drain():
            while chunk_ := b.recv(1 << 20):
                got.extend(chunk_)

        t = threading.Thread(target=drain)
        t.start()
        body.send_to(sock)
        sock.close()
        t.join()
        b.close()
        with lock:
            received[n] = bytes(got)
            seen.update(sock.buffers)

    read_ahead = 4 * BLOCK
    with open(f, "rb") as fh:
        result = run_pass(
            fh.fileno(), len(data), chunk, set(range(7)), send, concurrency=2, read_ahead=read_ahead
        )
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.parts_sent == 7
    assert received == {n: data[n * chunk : (n + 1) * chunk] for n in range(7)}
    # 19 blocks went out of at most read-ahead / block + 1 buffers (a fresh one per block before)
    assert len(seen) <= read_ahead // BLOCK + 1, len(seen)


def test_a_part_carries_the_clients_headers_and_is_traced(tmp_path):
    data = os.urandom(BLOCK + 123)
    f = tmp_path / "p.bin"
    f.write_bytes(data)
    bodies = []

    def part(h):
        bodies.append(len(data))
        send_json(h, 200, {"part_number": 2, "received": True})

    events = []
    with HostileServer({"/v1/uploads/u1/parts/2": part}) as srv, SophonClient(srv.url, KEY) as c:
        c.http_observers.append(events.append)
        with open(f, "rb") as fh:
            got = c.uploads.put_part("u1", 2, PartSlice(fh.fileno(), 0, len(data)))
    assert got.part_number == 2
    method, path, headers = srv.requests[0]
    assert (method, path) == ("PUT", "/v1/uploads/u1/parts/2")
    assert headers["Authorization"] == f"Bearer {KEY}" and headers["User-Agent"].startswith("sophon-cli/")
    assert (
        headers["Content-Length"] == str(len(data)) and headers["Content-Type"] == "application/octet-stream"
    )
    assert "Transfer-Encoding" not in headers
    (event,) = events
    assert (event.method, event.path, event.status) == ("PUT", "/v1/uploads/u1/parts/2", 200)
    assert ("authorization", "Bearer ***") in event.request_headers
    assert KEY not in repr(event)


class ClosingServer:
    """Answers every PUT with 200 and keep-alive framing, then closes the connection anyway (an
    idle timeout that struck at once): a client that reuses the connection writes into a dead one."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.bodies: list[int] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                f = conn.makefile("rb")
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = f.readline()
                    if not line:
                        break
                    head += line
                length = next(
                    int(h.split(b":", 1)[1])
                    for h in head.split(b"\r\n")
                    if h.lower().startswith(b"content-length")
                )
                self.bodies.append(len(f.read(length)))
                body = json.dumps({"part_number": 0, "received": True}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                f.close()
            time.sleep(0.05)  # the FIN reaches the client before its next request

    def __enter__(self) -> ClosingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_an_idle_connection_the_server_closed_is_not_reused(tmp_path):
    data = os.urandom(2000)
    f = tmp_path / "p.bin"
    f.write_bytes(data)
    retries = []
    with (
        ClosingServer() as srv,
        SophonClient(srv.url, KEY, on_retry=retries.append, sleep=lambda s: None) as c,
    ):
        with open(f, "rb") as fh:
            for n in range(3):
                c.uploads.put_part("u1", n, PartSlice(fh.fileno(), 0, len(data)))
                time.sleep(0.1)
    assert srv.bodies == [2000, 2000, 2000]
    assert retries == []  # each part went out on a fresh connection, not into a dead one


def _early_reply_server(status: int, body: dict):
    """Reads a request's head, answers at once without reading the body, and closes."""
    sock = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = sock.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            data = json.dumps(body).encode()
            conn.sendall(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            conn.shutdown(socket.SHUT_WR)
            time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_reply_sent_before_the_body_was_taken_is_the_error(tmp_path):
    """A server may refuse a part (here 401) before reading it and close: the client reports the
    server's answer, not the broken pipe it got while still writing."""
    data = os.urandom(32 * BLOCK)  # far more than the socket buffers hold
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    sock, url = _early_reply_server(401, {"error": {"code": "unauthorized", "message": "bad key"}})
    try:
        with SophonClient(url, KEY, max_retries=0) as c, open(f, "rb") as fh:
            with pytest.raises(APIError) as err:
                c.uploads.put_part("u1", 0, PartSlice(fh.fileno(), 0, len(data)))
    finally:
        sock.close()
    assert err.value.status == 401


CLIENT = r"""
import sys
from sophon_cli.client.http import SophonClient
with SophonClient(sys.argv[1], "xt_live_DIRECTSECRET123", timeout=600) as c:
    c.uploads.upload_file(sys.argv[2], new=True)
"""


def test_ctrl_c_cuts_a_part_blocked_on_a_server_that_stopped_reading(tmp_path):
    """The server takes a part's head and then reads nothing: the sender blocks in a write that
    only the 600 s timeout would end. Ctrl-C ends the upload at once (the pass shuts the socket)."""
    size = 64 * BLOCK
    f = tmp_path / "big.mkv"
    f.write_bytes(os.urandom(size))
    got_head = threading.Event()

    def create(h):
        send_json(h, 201, {"id": "upl_1", "chunk_size": size, "total_chunks": 1})

    stalled: list[socket.socket] = []

    def part(h):  # HostileServer reads the body first: answer the head by hand instead
        raise AssertionError("unreachable")

    srv = HostileServer({"/v1/uploads": create, "/v1/uploads/upl_1/parts/0": part})
    handler = srv.httpd.RequestHandlerClass

    class Stall(handler):  # type: ignore[misc, valid-type]
        def do_PUT(self):  # noqa: N802 - http.server's naming
            stalled.append(self.connection)
            got_head.set()
            time.sleep(120)  # never reads the body

    srv.httpd.RequestHandlerClass = Stall
    with srv:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, srv.url, str(f)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert got_head.wait(60), proc.stderr.read() if proc.poll() is not None else "no PUT"
            time.sleep(1.0)  # the sender fills the socket buffers and blocks in its write
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=60)  # not the 600 s write timeout
            except subprocess.TimeoutExpired:
                pytest.fail("the upload did not stop on Ctrl-C: its sender is still blocked")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err


def _trickle_part_reply(every: float):
    return trickle(json.dumps({"part_number": 0, "received": True}).encode() + b" " * 200, every)


def test_a_trickling_reply_to_a_part_is_bounded_by_the_timeout(tmp_path):
    """Each byte of the reply arrives within the per-read timeout; the whole would take 20 s. The
    reply to a part is bounded as a whole like any API reply (the clock starts once the body is
    sent), and the -v trace names the cut."""
    from sophon_cli.client.errors import TransportError

    f = tmp_path / "p.bin"
    f.write_bytes(os.urandom(5000))
    events = []
    with HostileServer({"/v1/uploads/u1/parts/0": _trickle_part_reply(0.1)}) as srv:
        with SophonClient(srv.url, KEY, timeout=1.0, max_retries=0) as c, open(f, "rb") as fh:
            c.http_observers.append(events.append)
            with pytest.raises(TransportError) as info:
                c.uploads.put_part("u1", 0, PartSlice(fh.fileno(), 0, 5000))
    assert "did not answer within 1 s" in str(info.value)
    assert [(e.method, e.error) for e in events] == [("PUT", "deadline")]


def test_watchdogs_share_one_thread_and_still_cut(tmp_path):
    """Every request through http.client arms a watchdog on its reply; an upload arms one per part.
    They share one thread (not one each), a cancelled one never fires, and an armed one shuts its
    socket down at its deadline."""
    from sophon_cli.client.direct import HeadWatchdog

    class Conn:
        def __init__(self, sock):
            self.sock = sock

    pairs = [socket.socketpair() for _ in range(51)]
    try:
        HeadWatchdog(Conn(pairs[0][0]), 60).cancel()  # the shared thread exists from here on
        before = threading.active_count()
        armed = [HeadWatchdog(Conn(a), 60) for a, _ in pairs[1:50]]
        assert threading.active_count() == before  # 49 armed, no thread of their own
        for dog in armed:
            dog.cancel()
        dogs = []
        for a, _ in pairs[1:50]:
            dogs.append(HeadWatchdog(Conn(a), 1.0))
            dogs[-1].cancel()
        live = HeadWatchdog(Conn(pairs[50][0]), 1.5)  # due after every cancelled one
        pairs[50][0].settimeout(30)  # a bound for a broken watchdog, not a measurement
        assert pairs[50][0].recv(1) == b""  # shut down by the watchdog
        assert live.fired and not any(d.fired for d in dogs)
        pairs[1][0].setblocking(False)
        with pytest.raises(BlockingIOError):
            pairs[1][0].recv(1)  # a cancelled one left its socket alone
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_base_url_with_credentials_stays_with_httpx(tmp_path):
    """httpx sends a URL's user:password as Basic auth; http.client would not, so such a base URL
    never takes the direct path (the part still arrives, with the same Authorization httpx sends)."""
    from sophon_cli.client import direct

    assert not direct.usable("http://user:pw@127.0.0.1:9/v1/uploads/u/parts/0", custom_transport=False)
    assert direct.usable("http://127.0.0.1:9/v1/uploads/u/parts/0", custom_transport=False)
    data = os.urandom(3000)
    f = tmp_path / "p.bin"
    f.write_bytes(data)
    with HostileServer({"/v1/uploads/u1/parts/0": lambda h: send_json(h, 200, {"part_number": 0})}) as srv:
        url = srv.url.replace("http://", "http://user:pw@")
        with SophonClient(url, KEY) as c, open(f, "rb") as fh:
            c.uploads.put_part("u1", 0, PartSlice(fh.fileno(), 0, len(data)))
    ((method, _, headers),) = srv.requests
    assert method == "PUT" and headers["Accept-Encoding"] != "identity"  # httpx made it


def test_a_compressed_reply_to_a_part_is_decoded_as_httpx_would():
    """The direct path asks for identity; a server that gzips anyway is decoded (and a coding that
    does not decode is the server's malformed reply), as on the httpx path."""
    import gzip

    from sophon_cli.client.errors import MalformedResponseError

    def gz(body: bytes):
        def route(h):
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Encoding", "gzip")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        return route

    good = gzip.compress(json.dumps({"part_number": 3, "received": True}).encode())
    routes = {"/v1/uploads/u1/parts/3": gz(good), "/v1/uploads/u1/parts/4": gz(b"not gzip at all")}
    data = b"x" * 1000
    with HostileServer(routes) as srv, SophonClient(srv.url, KEY, max_retries=0) as c:
        import tempfile

        with tempfile.TemporaryFile() as fh:
            fh.write(data)
            fh.flush()
            assert c.uploads.put_part("u1", 3, PartSlice(fh.fileno(), 0, len(data))).part_number == 3
            with pytest.raises(MalformedResponseError):
                c.uploads.put_part("u1", 4, PartSlice(fh.fileno(), 0, len(data)))
    assert all(h["Accept-Encoding"] == "identity" for _, _, h in srv.requests)
