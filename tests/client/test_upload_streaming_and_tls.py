"""Parts stream from disk with Content-Length framing (a retry re-sends the whole part), and the CA
bundle is loaded only when a TLS connection can happen (never at the cost of verification)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from sophon_cli.client.errors import InputError
from sophon_cli.client.http import SophonClient, plain_http_options
from sophon_cli.client.uploads import PartSlice, _PartReader

KEY = "xt_live_SECRETSECRET123"


def _reader(path):
    fh = open(path, "rb")  # noqa: SIM115 - closed by the test
    return fh, _PartReader(fh)


def test_part_slice_streams_blocks_and_is_reiterable(tmp_path):
    data = bytes(range(256)) * 40  # 10240 bytes
    f = tmp_path / "v.bin"
    f.write_bytes(data)
    fh, reader = _reader(f)
    with fh:
        part = PartSlice(reader, 1000, 5000, block=1024)
        assert len(part) == 5000
        blocks = list(part)
        assert [len(b) for b in blocks] == [1024] * 4 + [904]
        assert b"".join(blocks) == data[1000:6000]
        assert b"".join(part) == data[1000:6000]  # a second pass starts again at the offset


def test_part_slice_of_a_shrunk_file_raises_input_error(tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"x" * 100)
    fh, reader = _reader(f)
    with fh:
        with pytest.raises(InputError, match="part 3 is short"):
            list(PartSlice(reader, 50, 100, block=16, part_number=3))


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
    fh, reader = _reader(f)
    with fh, c:
        result = c.uploads.put_part("upl_1", 1, PartSlice(reader, 4096, 8192, block=1000))
    assert result.part_number == 1
    assert len(seen) == 2
    for request, body in zip(seen, bodies, strict=True):
        assert request.headers["content-length"] == "8192"
        assert "transfer-encoding" not in request.headers
        assert body == data[4096 : 4096 + 8192]


def test_upload_file_streams_parts(tmp_path, server):
    data = bytes(range(256)) * 4096 * 3  # 3 MiB: several send blocks
    f = tmp_path / "clip.mp4"
    f.write_bytes(data)
    calls = []
    with SophonClient(server.url, server.api_keys[0]) as c:
        original = c.uploads.put_part

        def spy(upload_id, n, part):
            calls.append(part)
            return original(upload_id, n, part)

        c.uploads.put_part = spy  # type: ignore[method-assign]
        session = c.uploads.create("clip.mp4", len(data), "video/mp4")
        status = c.uploads._status_or_stale(session.id)
        assert status.received_chunks == []
        c.uploads._send_parts(f, len(data), session, list(range(session.total_chunks)), 2, None, 0)
        assert calls and all(isinstance(p, PartSlice) for p in calls)
        assert sum(len(p) for p in calls) == len(data)
        assert sorted(c.uploads.get(session.id).received_chunks) == list(range(session.total_chunks))
        c.uploads.cancel(session.id)


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
