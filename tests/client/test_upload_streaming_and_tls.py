"""Parts stream from one sequential read pass with Content-Length framing (a retry re-reads the
part from disk), and the CA bundle is loaded only when a TLS connection can happen (never at the
cost of verification)."""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
import time
import tracemalloc

import httpx
import pytest

from sophon_cli.client.content import ShortRead
from sophon_cli.client.http import SophonClient, plain_http_options
from sophon_cli.client.upload_pass import BLOCK, PartSlice, PartStream, run_pass

KEY = "xt_live_SECRETSECRET123"


def test_part_slice_streams_blocks_and_is_reiterable(tmp_path):
    data = bytes(range(256)) * 40  # 10240 bytes
    f = tmp_path / "v.bin"
    f.write_bytes(data)
    with open(f, "rb") as fh:
        part = PartSlice(fh.fileno(), 1000, 5000, block=1024)
        assert len(part) == 5000
        blocks = list(part)
        assert [len(b) for b in blocks] == [1024] * 4 + [904]
        assert b"".join(blocks) == data[1000:6000]
        assert b"".join(part) == data[1000:6000]  # a second pass starts again at the offset


def test_part_slice_of_a_shrunk_file_raises_short_read(tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"x" * 100)
    with open(f, "rb") as fh, pytest.raises(ShortRead):
        list(PartSlice(fh.fileno(), 50, 100, block=16, part_number=3))


def test_put_part_sends_content_length_and_a_retry_resends_the_whole_part(tmp_path):
    data = bytes(range(256)) * 64  # 16384 bytes
    f = tmp_path / "v.bin"
    f.write_bytes(data)
    seen: list[httpx.Request] = []
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        bodies.append(request.read())
        if len(seen) == 1:
            return httpx.Response(503, json={"error": {"code": "capacity_exceeded", "message": "busy"}})
        return httpx.Response(200, json={"part_number": 1, "received": True})

    c = SophonClient("http://sophon.test", KEY, transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with open(f, "rb") as fh, c:
        result = c.uploads.put_part("upl_1", 1, PartSlice(fh.fileno(), 4096, 8192, block=1000))
    assert result.part_number == 1
    assert len(seen) == 2
    for request, body in zip(seen, bodies, strict=True):
        assert request.headers["content-length"] == "8192"
        assert "transfer-encoding" not in request.headers
        assert body == data[4096 : 4096 + 8192]


def _file(tmp_path, size, name="big.bin"):
    f = tmp_path / name
    f.write_bytes(os.urandom(size))
    return f


def test_one_pass_hashes_everything_and_sends_only_the_missing_parts(tmp_path):
    chunk = 3 * BLOCK // 2  # parts that do not align with the read blocks
    f = _file(tmp_path, 5 * chunk + 12345)
    data = f.read_bytes()
    got: dict[int, bytes] = {}
    lock = threading.Lock()

    def send(n, body):
        assert isinstance(body, PartStream) and len(body) == len(data[n * chunk : (n + 1) * chunk])
        blob = b"".join(body)
        with lock:
            got[n] = blob

    done = []
    with open(f, "rb") as fh:
        result = run_pass(
            fh.fileno(),
            len(data),
            chunk,
            {1, 3, 5},
            send,
            concurrency=2,
            on_part_done=lambda n, ln: done.append(n),
        )
    assert result.sha256 == hashlib.sha256(data).hexdigest()  # parts 0, 2, 4 were read and hashed too
    assert result.parts_sent == 3 and sorted(done) == [1, 3, 5] and result.stopped is None
    assert got == {n: data[n * chunk : (n + 1) * chunk] for n in (1, 3, 5)}


def test_a_retried_part_is_reread_from_disk(tmp_path):
    chunk = 2 * BLOCK
    f = _file(tmp_path, 2 * chunk)
    data = f.read_bytes()
    attempts: list[bytes] = []

    def send(n, body):
        if n == 1:
            first = iter(body)
            attempts.append(next(first))  # the connection drops after one block...
            attempts.append(b"".join(body))  # ...and the retry sends the whole part again
        else:
            b"".join(body)

    with open(f, "rb") as fh:
        result = run_pass(fh.fileno(), len(data), chunk, {0, 1}, send, concurrency=2)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert attempts == [data[chunk : chunk + BLOCK], data[chunk:]]


def test_read_ahead_is_bounded_while_the_wire_is_slow(tmp_path):
    """Memory stays at the read-ahead budget (plus a block per part in flight), not at
    concurrency x chunk, when the reader is faster than the senders."""
    chunk = 4 * BLOCK
    f = _file(tmp_path, 3 * chunk)
    read_ahead = 2 * BLOCK

    def slow_send(n, body):
        for _ in body:
            time.sleep(0.02)

    tracemalloc.start()
    try:
        with open(f, "rb") as fh:
            run_pass(
                fh.fileno(), 3 * chunk, chunk, {0, 1, 2}, slow_send, concurrency=3, read_ahead=read_ahead
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= read_ahead + 4 * BLOCK, peak / BLOCK  # without the bound: 12 MiB


def test_a_failing_part_stops_the_pass_and_reaches_the_caller(tmp_path):
    chunk = BLOCK
    f = _file(tmp_path, 8 * chunk)
    sent = []

    class Boom(Exception):
        pass

    def send(n, body):
        if n == 2:
            raise Boom()
        b"".join(body)
        sent.append(n)

    with open(f, "rb") as fh, pytest.raises(Boom):
        run_pass(fh.fileno(), 8 * chunk, chunk, set(range(8)), send, concurrency=2)
    assert len(sent) < 8


def test_upload_file_streams_parts_from_the_pass(tmp_path, server):
    data = os.urandom(3 * 1024 * 1024)  # one part (whole-file tier), several read blocks
    f = tmp_path / "clip.bin"
    f.write_bytes(data)
    calls = []
    with SophonClient(server.url, server.api_keys[0]) as c:
        original = c.uploads.put_part

        def spy(upload_id, n, part):
            calls.append(type(part))
            return original(upload_id, n, part)

        c.uploads.put_part = spy  # type: ignore[method-assign]
        with pytest.raises(Exception, match="not a usable video"):  # random bytes: refused at complete
            c.uploads.upload_file(f)
        assert calls == [PartStream]


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def no_proxies(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ca_loads(monkeypatch):
    calls = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self, *args, **kwargs):
        calls.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    return calls


def test_plain_http_base_url_skips_the_ca_bundle(no_proxies, ca_loads):
    with SophonClient("http://127.0.0.1:9", KEY) as c:
        c.anon_client("http://127.0.0.1:9/v1/downloads/tok")
        assert ca_loads == []


def test_https_base_url_still_verifies(no_proxies, ca_loads):
    with SophonClient("https://api.sophon.test", KEY) as c:
        ctx = c._http._transport._pool._ssl_context
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        anon = c.anon_client("https://cdn.sophon.test/v1/downloads/tok")
        assert anon._transport._pool._ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert c.anon_client() is anon
    assert ca_loads  # the bundle was loaded


def test_https_reached_from_a_plain_http_client_is_verified(no_proxies):
    with SophonClient("http://127.0.0.1:9", KEY) as c:
        for client in (c._http, c.anon_client("http://127.0.0.1:9/x")):
            transport = client._transport_for_url(httpx.URL("https://127.0.0.1:1/"))
            assert transport is not client._transport
            with pytest.raises(httpx.ConnectError):
                transport.handle_request(httpx.Request("GET", "https://127.0.0.1:1/"))
            ctx = transport._inner._pool._ssl_context
            assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_plain_http_options_leave_https_proxies_and_custom_transports_alone(no_proxies, monkeypatch):
    limits = httpx.Limits()
    assert plain_http_options("https://a.test", None, limits) == {}
    assert plain_http_options("http://a.test", httpx.MockTransport(lambda r: None), limits) == {}
    assert plain_http_options("http://a.test", None, limits)["verify"] is False
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.test:3128")
    assert plain_http_options("http://a.test", None, limits) == {}
