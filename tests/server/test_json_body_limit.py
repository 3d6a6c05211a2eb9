"""A JSON request body is read at most 1 MiB (sophon_cli/server/jsonbody.py): a larger one, by its
Content-Length or found while reading a chunked body, is a 400 ``validation_error`` with
``Connection: close`` and creates nothing. Before, the server held any body in memory whole (a
webhook with a 2 MiB name was created). A body just under the bound is read as usual."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from sophon_cli.server.jsonbody import LIMIT

from .helpers import Api, read_answer


def _send(srv, path: str, body: bytes, *, chunked: bool) -> tuple[int, dict, bytes]:
    u = urlsplit(srv.url)
    sock = socket.create_connection((u.hostname, u.port), timeout=60)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {srv.api_keys[0]}\r\n"
            f"Content-Type: application/json\r\nIdempotency-Key: big-{chunked}\r\n{framing}\r\n\r\n"
        ).encode()
    )
    try:
        if chunked:
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(body)
    except OSError:
        pass  # the server answered and closed before taking it all
    return read_answer(sock)


@pytest.fixture
def srv(make_server):
    return make_server()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_json_body_over_1_mib_is_400_and_creates_nothing(srv, chunked):
    body = json.dumps({"url": "https://hooks.example.com/big", "name": "x" * (2 * LIMIT)}).encode()
    status, answer, head = _send(srv, "/v1/webhooks", body, chunked=chunked)
    assert status == 400, answer
    err = answer["error"]
    assert err["code"] == "validation_error" and err["retryable"] is False
    assert "larger than 1 MiB" in err["message"] and "send a smaller body" in err["message"]
    assert b"connection: close" in head
    api = Api(srv)
    try:
        assert api.get("/v1/webhooks").json()["webhooks"] == []
    finally:
        api.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_json_body_just_under_1_mib_is_read(srv, chunked):
    doc = {"url": "https://hooks.example.com/big", "name": ""}
    doc["name"] = "x" * (LIMIT - len(json.dumps(doc)))
    body = json.dumps(doc).encode()
    assert len(body) == LIMIT
    status, answer, _ = _send(srv, "/v1/webhooks", body, chunked=chunked)
    assert status == 201, answer
    assert answer["url"] == "https://hooks.example.com/big"
