"""A request body that makes no progress for ``body_idle_seconds`` is abandoned: the stalled request
gets a 400 ``validation_error`` and its connection is closed, nothing of it is recorded, and a
duplicate PUT of the same part that was waiting for it (since one writer per part) proceeds.
Before the bound, a client that sent the headers and stalled held the part (and its retry) forever."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from .helpers import Api, SlowPut, read_answer, staged_bytes, wait_for

CS = 2 << 20
SENT = 3 << 19  # the piece of part 0 the stalled client sends before it stops
SEEN = 1 << 20  # (the server writes parts in 1 MiB buffers)
IDLE = 2.0  # short for the test; nothing here asserts on how long anything took
# `video`: 5 MiB of random frames in Matroska (tests/server/conftest.py)


@pytest.mark.timeout(120)
def test_a_stalled_part_put_is_cut_and_its_waiting_retry_succeeds(make_server, video):
    data = video
    srv = make_server(chunk_size=CS, body_idle_seconds=IDLE)
    api = Api(srv)
    try:
        up = api.create_upload("v.mkv", len(data))
        uid, total = up["id"], up["total_chunks"]
        part0 = data[:CS]
        stalled = SlowPut(srv, uid, 0, CS)
        stalled.sock.settimeout(60)
        stalled.send(bytes(b ^ 0xFF for b in part0[:SENT]))  # wrong bytes: they must not survive
        wait_for(lambda: staged_bytes(srv, uid, 0, SEEN) != part0[:SEEN], "the stalled piece on disk")
        retry: list[int] = []
        t = threading.Thread(
            target=lambda: retry.append(api.put(f"/v1/uploads/{uid}/parts/0", content=part0).status_code)
        )
        t.start()
        # the retry is inside the server, waiting for the stalled writer (or already answered)
        wait_for(lambda: srv.core.in_flight >= 2 or retry, "the retry of part 0 to arrive")

        status, body, head = read_answer(stalled.sock)  # the stalled client never sends the rest
        assert status == 400, body  # a status the contract lists for uploadPart
        err = body["error"]
        assert err["code"] == "validation_error" and err["retryable"] is False
        assert "made no progress" in err["message"] and "send the request again" in err["message"]
        assert b"connection: close" in head

        t.join(60)
        assert retry == [200]
        for n in range(1, total):
            r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * CS : (n + 1) * CS])
            assert r.status_code == 200, r.text
        assert sorted(api.get(f"/v1/uploads/{uid}").json()["received_chunks"]) == list(range(total))
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()  # the stalled bytes were not counted
    finally:
        api.close()


@pytest.mark.timeout(120)
def test_a_stalled_json_body_is_cut_and_nothing_is_created(make_server):
    srv = make_server(body_idle_seconds=IDLE)
    api = Api(srv)
    try:
        u = urlsplit(srv.url)
        sock = socket.create_connection((u.hostname, u.port), timeout=60)
        body = json.dumps({"url": "http://127.0.0.1:9/hook"}).encode()
        head = (
            f"POST /v1/webhooks HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {srv.api_keys[0]}\r\n"
            f"Content-Type: application/json\r\nIdempotency-Key: stalled-1\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:5])
        status, answer, head_in = read_answer(sock)
        assert b"connection: close" in head_in
        assert status == 400, answer
        assert answer["error"]["code"] == "validation_error"
        assert "made no progress" in answer["error"]["message"]
        r = api.get("/v1/webhooks")
        assert r.status_code == 200 and r.json()["webhooks"] == [], r.text
    finally:
        api.close()


def test_the_idle_bound_has_a_default_an_env_override_and_refuses_nonsense(tmp_path, monkeypatch):
    from sophon_cli.server.config import BODY_IDLE, BODY_IDLE_ENV, ServerConfig

    monkeypatch.delenv(BODY_IDLE_ENV, raising=False)
    assert ServerConfig(data_dir=tmp_path).body_idle_seconds == BODY_IDLE == 60.0
    monkeypatch.setenv(BODY_IDLE_ENV, "2.5")
    assert ServerConfig(data_dir=tmp_path).body_idle_seconds == 2.5
    assert ServerConfig(data_dir=tmp_path, body_idle_seconds=7).body_idle_seconds == 7.0
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(BODY_IDLE_ENV, bad)
        with pytest.raises(ValueError, match=BODY_IDLE_ENV):
            ServerConfig(data_dir=tmp_path)


@pytest.mark.timeout(120)
def test_a_body_slower_in_all_than_the_bound_but_never_idle_that_long_is_received(make_server):
    """The bound is on each wait for the body, not on the body as a whole (one timer per request,
    set again for the wait in progress when it fires)."""
    srv = make_server(chunk_size=CS, body_idle_seconds=IDLE, body_min_rate=0)
    api = Api(srv)
    try:
        data = bytes(range(256)) * (CS // 256)
        uid = api.create_upload("v.bin", len(data))["id"]
        slow = SlowPut(srv, uid, 0, CS)
        slow.sock.settimeout(60)
        pieces = 6  # a piece every IDLE / 3: the whole body takes twice the bound
        step = CS // pieces
        for i in range(pieces):
            time.sleep(IDLE / 3)
            slow.send(data[i * step : CS if i == pieces - 1 else (i + 1) * step])
        assert slow.status() == 200
        assert api.get(f"/v1/uploads/{uid}").json()["received_chunks"] == [0]
    finally:
        api.close()
