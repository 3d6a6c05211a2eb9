"""A request body that trickles (each byte inside the idle bound, so never idle) is abandoned by
the minimum-rate rule (sophon_cli/server/bodyrate.py): 400 ``validation_error``, ``Connection:
close``, nothing of it recorded. Before the rule, one byte per ``body_idle_seconds - ε`` held the
request, and its part's lock, forever. A slow but steady body is not cut, and the default rule
lets a 10 GiB part through at link speeds far below any real one.

The windows here are short; no assertion is on how long anything took: a trickle only gets slower
on a loaded machine (still cut), and the steady body is 30 times above its minimum."""

from __future__ import annotations

import json
import select
import socket
import threading

import pytest

from sophon_cli.server.bodyrate import (
    BODY_MIN_RATE,
    BODY_MIN_RATE_ENV,
    BODY_RATE_WINDOW,
    BODY_RATE_WINDOW_ENV,
    BodyRate,
    BodyTooSlow,
)

from .helpers import Api, SlowPut, read_answer

CS = 64 << 10  # part size of these uploads
RATE, WINDOW = 1000.0, 2.0  # bytes/s over seconds of waiting
IDLE = 30.0  # the idle bound never fires here: every piece comes well inside it


def _trickle(sock: socket.socket, pieces, pause: float) -> None:
    """Send ``pieces`` one at a time, ``pause`` seconds apart, until the server answers (or closes),
    or the test's reader, having read the answer, closes the socket."""
    for piece in pieces:
        try:
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                return
            sock.sendall(piece)
        except (OSError, ValueError):  # ValueError: closed by the reader meanwhile (fd -1)
            return


@pytest.mark.timeout(120)
def test_a_trickled_part_put_is_cut_and_not_recorded(make_server):
    srv = make_server(chunk_size=CS, body_idle_seconds=IDLE, body_min_rate=RATE, body_rate_window=WINDOW)
    api = Api(srv)
    try:
        data = bytes(range(256)) * (2 * CS // 256)
        up = api.create_upload("v.mkv", len(data))
        uid = up["id"]
        slow = SlowPut(srv, uid, 0, CS)
        slow.sock.settimeout(60)
        sender = threading.Thread(target=_trickle, args=(slow.sock, (b"x" for _ in range(CS)), 0.25))
        sender.start()
        status, body, head = read_answer(slow.sock)
        sender.join(30)
        assert status == 400, body
        err = body["error"]
        assert err["code"] == "validation_error" and err["retryable"] is False
        assert "below the minimum of 1000 bytes/s" in err["message"], err
        assert "send the request again" in err["message"]
        assert b"connection: close" in head
        assert api.get(f"/v1/uploads/{uid}").json()["received_chunks"] == []  # nothing recorded
        r = api.put(f"/v1/uploads/{uid}/parts/0", content=data[:CS])  # a retry at a real speed
        assert r.status_code == 200, r.text
    finally:
        api.close()


@pytest.mark.timeout(120)
def test_a_trickled_json_body_is_cut_and_nothing_is_created(make_server):
    srv = make_server(body_idle_seconds=IDLE, body_min_rate=RATE, body_rate_window=WINDOW)
    api = Api(srv)
    try:
        from urllib.parse import urlsplit

        u = urlsplit(srv.url)
        sock = socket.create_connection((u.hostname, u.port), timeout=60)
        body = json.dumps({"url": "http://127.0.0.1:9/hook", "name": "x" * 2000}).encode()
        sock.sendall(
            (
                f"POST /v1/webhooks HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {srv.api_keys[0]}\r\n"
                f"Content-Type: application/json\r\nIdempotency-Key: trickled-1\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
        )
        sender = threading.Thread(
            target=_trickle, args=(sock, (body[i : i + 1] for i in range(len(body))), 0.25)
        )
        sender.start()
        status, answer, head = read_answer(sock)
        sender.join(30)
        assert status == 400 and answer["error"]["code"] == "validation_error", answer
        assert "below the minimum" in answer["error"]["message"]
        assert b"connection: close" in head
        assert api.get("/v1/webhooks").json()["webhooks"] == []
    finally:
        api.close()


@pytest.mark.timeout(120)
def test_a_slow_but_steady_part_put_is_not_cut(make_server):
    # 4 KiB every 0.125 s: about 32 KB/s, 30 times the minimum, over several windows
    srv = make_server(chunk_size=CS, body_idle_seconds=IDLE, body_min_rate=RATE, body_rate_window=WINDOW / 2)
    api = Api(srv)
    try:
        data = bytes(range(256)) * (CS // 256)
        uid = api.create_upload("v.mkv", len(data))["id"]
        slow = SlowPut(srv, uid, 0, CS)
        slow.sock.settimeout(60)
        _trickle(slow.sock, (data[i : i + 4096] for i in range(0, CS, 4096)), 0.125)
        assert slow.status() == 200
        assert api.get(f"/v1/uploads/{uid}").json()["received_chunks"] == [0]
    finally:
        api.close()


def test_the_rule_counts_whole_windows_of_waiting_only():
    rule = BodyRate(min_rate=100.0, window=10.0)
    rule.arrived(10, 9.0, False)  # 1 byte/s, but not a whole window yet
    rule.arrived(5000, 0.5, False)  # a burst: 5010 bytes in 9.5 s of waiting
    rule.arrived(0, 0.0, False)
    rule.arrived(2000, 0.6, False)  # 10.1 s: 7010 bytes >= 1010, a new window starts
    rule.arrived(1, 9.0, False)
    rule.arrived(1, 0.5, True)  # the message that completes the body is never refused
    rule = BodyRate(min_rate=100.0, window=10.0)
    rule.arrived(999, 9.99, False)
    with pytest.raises(BodyTooSlow) as caught:
        rule.arrived(1, 0.02, False)  # 1000 bytes in 10.01 s < 1001
    assert caught.value.reason == "arrived at 99.9 bytes/s over 10s, below the minimum of 100 bytes/s"
    assert str(caught.value) == "the request body " + caught.value.reason
    off = BodyRate(min_rate=0.0, window=1.0)
    off.arrived(0, 1000.0, False)  # 0: no minimum


def test_the_default_lets_a_10_gib_part_over_a_slow_link_through_and_cuts_a_trickle():
    # a 10 GiB part at 512 bytes/s (4 kbit/s, slower than any modem), in 64 KiB messages: the
    # whole body takes 8 months and is never refused
    assert (BODY_MIN_RATE, BODY_RATE_WINDOW) == (256.0, 120.0)
    rule = BodyRate(BODY_MIN_RATE, BODY_RATE_WINDOW)
    piece = 64 << 10
    for _ in range((10 << 30) // piece - 1):
        rule.arrived(piece, piece / 512.0, False)
    rule.arrived(piece, piece / 512.0, True)
    # one byte each 59 s (inside the 60 s idle bound) is cut after its third byte
    rule = BodyRate(BODY_MIN_RATE, BODY_RATE_WINDOW)
    rule.arrived(1, 59.0, False)
    rule.arrived(1, 59.0, False)
    with pytest.raises(BodyTooSlow):
        rule.arrived(1, 59.0, False)


def test_the_rate_settings_have_defaults_env_overrides_and_refuse_nonsense(tmp_path, monkeypatch):
    from sophon_cli.server.config import ServerConfig

    monkeypatch.delenv(BODY_MIN_RATE_ENV, raising=False)
    monkeypatch.delenv(BODY_RATE_WINDOW_ENV, raising=False)
    cfg = ServerConfig(data_dir=tmp_path)
    assert (cfg.body_min_rate, cfg.body_rate_window) == (BODY_MIN_RATE, BODY_RATE_WINDOW)
    monkeypatch.setenv(BODY_MIN_RATE_ENV, "0")
    monkeypatch.setenv(BODY_RATE_WINDOW_ENV, "30")
    cfg = ServerConfig(data_dir=tmp_path)
    assert (cfg.body_min_rate, cfg.body_rate_window) == (0.0, 30.0)
    assert ServerConfig(data_dir=tmp_path, body_min_rate=64).body_min_rate == 64.0
    for bad in ("-1", "nan", "inf", "slow"):
        monkeypatch.setenv(BODY_MIN_RATE_ENV, bad)
        with pytest.raises(ValueError, match=BODY_MIN_RATE_ENV):
            ServerConfig(data_dir=tmp_path)
    monkeypatch.delenv(BODY_MIN_RATE_ENV)
    for bad in ("0", "-1", "nan", "inf", "long"):
        monkeypatch.setenv(BODY_RATE_WINDOW_ENV, bad)
        with pytest.raises(ValueError, match=BODY_RATE_WINDOW_ENV):
            ServerConfig(data_dir=tmp_path)


def test_the_rate_rule_is_stated_in_the_readme_with_its_settings_and_defaults():
    from pathlib import Path

    section = (Path(__file__).resolve().parents[2] / "README.md").read_text().split("### The local server")[1]
    text = " ".join(section.split("\n## ", 1)[0].split())
    assert f"`{BODY_MIN_RATE_ENV}` (default {BODY_MIN_RATE:g} bytes/s;" in text
    assert f"`{BODY_RATE_WINDOW_ENV}` (default {BODY_RATE_WINDOW:g} s)" in text
    assert "below the minimum of … bytes/s" in text
