"""One writer per part: a duplicate PUT of a part that is still being received waits for the first
one and is then drained, so a received part is never rewritten and the sha256 at complete is the
sha256 of the bytes on disk, whatever the timing of the duplicates."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .helpers import Api

CS = 64 * 1024
SENT = 48 * 1024  # the first piece of a slow body; the test waits until 32 KiB of it are on disk
SEEN = 32 * 1024


class SlowPut:
    """A part PUT over a raw socket whose body is sent in pieces, when the test says so."""

    def __init__(self, srv, uid: str, n: int, length: int) -> None:
        u = urlsplit(srv.url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        head = (
            f"PUT /v1/uploads/{uid}/parts/{n} HTTP/1.1\r\nHost: {u.netloc}\r\n"
            f"Authorization: Bearer {srv.api_keys[0]}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        self.sock.sendall(head.encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def status(self) -> int:
        reply = b""
        while b"\r\n" not in reply:
            got = self.sock.recv(65536)
            if not got:
                break
            reply += got
        self.sock.close()
        return int(reply.split(b" ", 2)[1])


def wait_for(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def staged_bytes(srv, uid: str, start: int, length: int) -> bytes:
    path = Path(srv.core.store.get_upload(uid)["path"])
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(length)


@pytest.fixture(scope="module")
def video(tmp_path_factory, make_clip) -> bytes:
    data = make_clip(tmp_path_factory.mktemp("video") / "v.mp4", seconds=2, size="640x480").read_bytes()
    assert len(data) > 3 * CS
    return data


def test_a_duplicate_put_of_a_part_in_flight_never_rewrites_it(make_server, video):
    data = video
    srv = make_server(chunk_size=CS)
    api = Api(srv)
    try:
        up = api.create_upload("clip.mp4", len(data))
        uid, total = up["id"], up["total_chunks"]
        first = data[:CS]
        other = bytes(b ^ 0xFF for b in first)  # a second PUT of part 0 with different bytes
        a = SlowPut(srv, uid, 0, CS)
        a.send(first[:SENT])
        wait_for(lambda: staged_bytes(srv, uid, 0, SEEN) == first[:SEEN], "the first piece on disk")
        b_status: list[int] = []
        b = threading.Thread(
            target=lambda: b_status.append(api.put(f"/v1/uploads/{uid}/parts/0", content=other).status_code)
        )
        b.start()
        # the duplicate is inside the server (waiting for the first writer) or already answered
        wait_for(lambda: srv.core.in_flight >= 2 or b_status, "the duplicate PUT to arrive")
        for n in range(1, total):
            r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * CS : (n + 1) * CS])
            assert r.status_code == 200, r.text
        a.send(first[SENT:])
        assert a.status() == 200
        b.join(30)
        assert b_status == [200]
        assert staged_bytes(srv, uid, 0, CS) == first  # the first writer's bytes, not rewritten
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        source = Path(srv.core.store.get_upload(uid)["path"]).read_bytes()
        assert r.json()["sha256"] == hashlib.sha256(source).hexdigest()  # the bytes on disk
        assert source == data  # the first writer's part, whole: the duplicate was drained
    finally:
        api.close()


def test_complete_waits_for_nothing_half_written(make_server, video):
    """While the only copy of a part is still arriving, complete reports it missing (and the part,
    once in, is the one hashed)."""
    data = video
    srv = make_server(chunk_size=CS)
    api = Api(srv)
    try:
        up = api.create_upload("clip.mp4", len(data))
        uid, total = up["id"], up["total_chunks"]
        for n in range(1, total):
            r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * CS : (n + 1) * CS])
            assert r.status_code == 200, r.text
        a = SlowPut(srv, uid, 0, CS)
        a.send(data[:SENT])
        wait_for(lambda: staged_bytes(srv, uid, 0, SEEN) == data[:SEEN], "the first piece on disk")
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 400 and "missing" in r.json()["error"]["message"], r.text
        a.send(data[SENT:CS])
        assert a.status() == 200
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        api.close()
