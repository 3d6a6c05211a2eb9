"""The server's HTTP protocol (server/httpbody.py) hands request bodies to the app as received:
the chunks httptools parsed, not a copy of them, and each request's body is its own (keep-alive,
pipelining)."""

from __future__ import annotations

import hashlib
import socket
from urllib.parse import urlsplit

from sophon_cli.server.httpbody import BodyChunks, ChunkedBodyProtocol

from .helpers import Api


def test_body_chunks_hand_over_one_chunk_as_is_and_join_several():
    one = BodyChunks()
    chunk = b"a" * 70000
    one += chunk
    assert len(one) == 70000 and bytes(one) is chunk  # no copy
    several = BodyChunks()
    for piece in (b"ab", b"", b"cde"):
        several += piece
    assert len(several) == 5 and bytes(several) == b"abcde"
    assert bytes(BodyChunks()) == b""


def test_the_server_runs_the_chunked_body_protocol(make_server):
    srv = make_server()
    # zerocopy adds to it (and the runner gives it its header bound with functools.partial)
    assert issubclass(srv._instance.server.config.http_protocol_class.func, ChunkedBodyProtocol)


def test_pipelined_part_puts_on_one_connection_each_get_their_own_body(make_server):
    srv = make_server(chunk_size=100_000)
    data = bytes(range(256)) * 1000  # 256,000 bytes: parts of 100,000, 100,000, 56,000
    api = Api(srv)
    try:
        up = api.create_upload("v.bin", len(data))
        uid, cs = up["id"], up["chunk_size"]
        u = urlsplit(srv.url)
        wire = b""
        for n in range(up["total_chunks"]):
            body = data[n * cs : (n + 1) * cs]
            wire += (
                f"PUT /v1/uploads/{uid}/parts/{n} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                f"Authorization: Bearer {srv.api_keys[0]}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
        with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
            for i in range(0, len(wire), 7919):  # bodies split across reads at odd places
                sock.sendall(wire[i : i + 7919])
            replies = b""
            while replies.count(b"HTTP/1.1 ") < up["total_chunks"] or not replies.endswith(b"}"):
                got = sock.recv(65536)
                assert got, replies
                replies += got
        assert replies.count(b"HTTP/1.1 200 ") == up["total_chunks"], replies
        got = api.get(f"/v1/uploads/{uid}").json()["received_chunks"]
        assert sorted(got) == [0, 1, 2]
        path = srv.core.store.get_upload(uid)["path"]
        with open(path, "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        api.close()
