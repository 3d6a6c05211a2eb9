"""The zero-copy send extension (server/zerocopy.py) on a real uvicorn server on 127.0.0.1, and
the output download route that uses it (routes/jobs.py) on the real local server: exact bytes for
whole files and ranges, Content-Length enforced, a client that goes away mid-body does not break
the server, and the request log has the download when its last byte arrives."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sophon_cli.server.zerocopy import EXTENSION, ZeroCopyProtocol, available
from tests.server.helpers import Api

DATA = os.urandom((3 << 20) + 4321)


class _App:
    """``/file?offset=O&count=C&extra=E``: Content-Length C, then C + E bytes of the file from O
    by one zero-copy message, then an empty last body message; records each scope's extensions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.extensions: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        self.extensions.append(dict(scope.get("extensions") or {}))
        q = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
        offset, count, extra = int(q.get("offset", 0)), int(q.get("count", len(DATA))), int(q.get("extra", 0))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % count)]}
        )
        with open(self.path, "rb") as fh:
            await send(
                {"type": EXTENSION, "file": fh, "offset": offset, "count": count + extra, "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture
def zc_server(tmp_path):
    import uvicorn

    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    app = _App(path)
    cfg = uvicorn.Config(app, http=ZeroCopyProtocol, lifespan="off", log_level="critical", access_log=False)
    server = uvicorn.Server(cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield app, port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _get(port: int, target: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_zero_copy_message_sends_the_exact_file_bytes(zc_server):
    app, port = zc_server
    assert _get(port, "/file") == (200, DATA)
    assert _get(port, "/file?offset=1000&count=70000") == (200, DATA[1000:71000])
    assert all(available({"type": "http", "extensions": e}) for e in app.extensions)
    assert EXTENSION in app.extensions[0]


def test_zero_copy_message_longer_than_content_length_is_refused(zc_server):
    _app, port = zc_server
    with pytest.raises(http.client.HTTPException):  # the connection is closed, nothing past the length
        _get(port, "/file?count=1000&extra=1")
    assert _get(port, "/file?count=5000") == (200, DATA[:5000])  # the server serves on


def test_client_gone_mid_sendfile_leaves_the_server_serving(zc_server):
    _app, port = zc_server
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        s.close()
    assert _get(port, "/file") == (200, DATA)


# -- the output download route on the real local server ------------------------------------------


def _job_with_output(srv, video: bytes, tmp_path: Path) -> tuple[Api, str]:
    """A completed job on ``srv`` whose output file now holds DATA."""
    api = Api(srv)
    clip = tmp_path / "clip.mkv"
    clip.write_bytes(video)
    job = api.wait(api.create_job(api.upload(clip))["id"])
    assert job["status"] == "completed", job
    Path(srv.core.store.get_job(job["id"])["output_path"]).write_bytes(DATA)
    return api, job["id"]


def _signed(api: Api, job_id: str) -> str:
    r = api.get(f"/v1/jobs/{job_id}/output", follow_redirects=False)
    assert r.status_code == 302, r.text
    return r.headers["location"]


def test_output_download_by_sendfile_has_the_exact_bytes_and_ranges(make_server, video, tmp_path):
    api, job_id = _job_with_output(make_server(), video, tmp_path)
    u = urlsplit(_signed(api, job_id))
    for rng, status, want in [
        (None, 200, DATA),
        ("bytes=5-", 206, DATA[5:]),
        (f"bytes={len(DATA) - 10}-", 206, DATA[-10:]),
        ("bytes=100-199", 206, DATA[100:200]),
    ]:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("GET", u.path, headers={"Range": rng} if rng else {})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert (resp.status, int(resp.getheader("content-length"))) == (status, len(want))
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(want).hexdigest()
    api.close()


def test_output_download_is_in_the_request_log_when_its_last_byte_arrives(make_server, video, tmp_path):
    api, job_id = _job_with_output(make_server(request_log=tmp_path / "requests.jsonl"), video, tmp_path)
    u = urlsplit(_signed(api, job_id))
    for _ in range(3):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("GET", u.path)
        assert conn.getresponse().read() == DATA
        lines = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
        conn.close()
        assert "/v1/downloads/" in lines[-1]["path"] and lines[-1]["status"] == 200
    api.close()


def test_the_server_runs_the_zero_copy_protocol(make_server):
    srv = make_server()
    made = srv._instance.server.config.http_protocol_class  # the class, given its header bound
    assert made.func is ZeroCopyProtocol
    assert made.keywords == {"header_timeout": srv.config.header_timeout_seconds}
