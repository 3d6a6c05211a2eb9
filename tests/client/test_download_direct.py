"""The signed-URL body received through http.client (client/direct_get.py), against a small real
HTTP server on 127.0.0.1 that misbehaves on purpose: no credentials sent, a mid-body drop resumed
with Range, a redirect and a compressed body left to httpx, a refused token refreshed."""

from __future__ import annotations

import gzip
import hashlib
import os
import time

import pytest

from sophon_cli.client import direct_get
from sophon_cli.client.http import SophonClient
from sophon_cli.client.models import Job
from tests.client.hostile import QuietHandler, Serving

KEY = "xt_live_DIRECTKEY0001"
DATA = os.urandom(3 * 1024 * 1024 + 777)
SHA = hashlib.sha256(DATA).hexdigest()


def job():
    return Job.model_validate(
        {
            "id": "job_1",
            "status": "completed",
            "output": {"state": "available", "container": "mp4", "bytes": len(DATA), "sha256": SHA},
            "final_artifact": "encoded",
        }
    )


class Origin(Serving):
    """``/v1/jobs/job_1/output`` -> 302 -> ``/dl/<token>``; ``behaviours`` says how each GET of the
    signed URL is answered (then normally)."""

    def __init__(self, behaviours=()):
        self.behaviours = list(behaviours)
        self.seen: list[tuple[str, dict[str, str]]] = []
        origin = self

        class Handler(QuietHandler):
            def do_GET(self):
                origin.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path.endswith("/output"):
                    self.redirect(302, "/dl/tok1")
                    return
                if self.path == "/dl/moved":
                    return self.body(DATA)
                how = origin.behaviours.pop(0) if origin.behaviours else "normal"
                if how == "drop":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(DATA)))
                    self.end_headers()
                    self.wfile.write(DATA[: len(DATA) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if how == "trickle_head":  # a status line, then one header byte at a time
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    try:
                        for _ in range(200):
                            self.wfile.write(b"X")
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                if how == "redirect":
                    self.redirect(307, "/dl/moved")
                    return
                if how == "gzip":
                    blob = gzip.compress(DATA)
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(blob)))
                    self.end_headers()
                    self.wfile.write(blob)
                    return
                if how == "expired":
                    doc = b'{"error":{"code":"forbidden","message":"token expired","retryable":false}}'
                    self.send_response(403)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(doc)))
                    self.end_headers()
                    self.wfile.write(doc)
                    return
                rng = self.headers.get("Range")
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                self.body(DATA[start:], start=start if rng else None)

            def body(self, blob, start=None):
                self.send_response(200 if start is None else 206)
                if start is not None:
                    self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

        self.serve(Handler)

    def downloads(self):
        return [(p, h) for p, h in self.seen if p.startswith("/dl/")]


@pytest.fixture
def origin(request):
    o = Origin(getattr(request, "param", ()))
    yield o
    o.close()


def download(origin, tmp_path):
    with SophonClient(origin.url, KEY, sleep=lambda s: None, max_retries=3) as c:
        return c.downloads.download("job_1", tmp_path / "o.mp4", job=job())


def test_the_direct_path_is_taken_for_a_plain_loopback_url(origin, tmp_path):
    assert direct_get.usable(origin.url + "/dl/tok1", custom_transport=False)
    assert not direct_get.usable(origin.url + "/dl/tok1", custom_transport=True)
    result = download(origin, tmp_path)
    assert result.verified and (tmp_path / "o.mp4").read_bytes() == DATA
    ((_, headers),) = origin.downloads()
    assert headers["accept-encoding"] == "identity"  # sent by the direct path only
    assert "authorization" not in headers and KEY not in str(headers)  # the token is the credential
    assert headers["user-agent"].startswith("sophon-cli")


@pytest.mark.parametrize("origin", [["drop"]], indirect=True)
def test_a_mid_body_drop_is_resumed_with_range(origin, tmp_path):
    result = download(origin, tmp_path)
    assert result.sha256 == SHA and (tmp_path / "o.mp4").read_bytes() == DATA
    first, second = origin.downloads()
    assert "range" not in first[1]
    assert second[1]["range"] == f"bytes={len(DATA) // 3}-"  # nothing received was lost


@pytest.mark.parametrize("origin", [["redirect"], ["gzip"]], indirect=True)
def test_what_the_direct_path_does_not_handle_goes_to_httpx(origin, tmp_path):
    result = download(origin, tmp_path)
    assert result.verified and (tmp_path / "o.mp4").read_bytes() == DATA
    assert origin.downloads()[1][1]["accept-encoding"] != "identity"  # the request httpx made


@pytest.mark.parametrize("origin", [["expired"]], indirect=True)
def test_a_refused_token_is_refreshed_once(origin, tmp_path):
    result = download(origin, tmp_path)
    assert result.verified
    assert sum(1 for p, _ in origin.seen if p.endswith("/output")) == 2


def test_a_proxy_in_the_environment_leaves_non_loopback_urls_to_httpx(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert not direct_get.usable("https://cdn.example/dl/tok", custom_transport=False)
    assert direct_get.usable("http://127.0.0.1:9/dl/tok", custom_transport=False)  # never proxied


@pytest.mark.parametrize("origin", [["drop"]], indirect=True)
def test_the_http_observers_hear_the_direct_attempts_with_what_was_sent(origin, tmp_path):
    events = []
    with SophonClient(origin.url, KEY, sleep=lambda s: None, max_retries=3) as c:
        c.http_observers.append(events.append)
        c.downloads.download("job_1", tmp_path / "o.mp4", job=job())
    gets = [e for e in events if "/dl/" in e.path]
    assert len(gets) == 2 and gets[-1].status == 206
    sent = {k.lower(): v for k, v in gets[-1].request_headers}
    assert sent["range"] == f"bytes={len(DATA) // 3}-" and sent["accept-encoding"] == "identity"
    assert all(KEY not in str(e) for e in events)


@pytest.mark.parametrize("origin", [["trickle_head"]], indirect=True)
def test_a_signed_url_that_trickles_its_head_is_cut_at_the_timeout(origin, tmp_path):
    # each header byte comes well within the per-read timeout; the head as a whole may not take longer
    from sophon_cli.client.errors import TransportError

    started = time.monotonic()
    with SophonClient(origin.url, KEY, sleep=lambda s: None, max_retries=0, timeout=1.0) as c:
        with pytest.raises(TransportError) as info:
            c.downloads.download("job_1", tmp_path / "o.mp4", job=job())
    elapsed = time.monotonic() - started
    assert elapsed < 8, f"the trickled head took {elapsed:.1f} s to be cut"  # 40 s before the fix
    assert "stalled" in str(info.value)  # the download stall: exit 8, a rerun resumes
    assert not (tmp_path / "o.mp4").exists()
