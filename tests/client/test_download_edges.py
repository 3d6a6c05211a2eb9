"""Download edges a well-behaved server does not produce (mid-body drops, Range ignored, another host,
expired tokens, hostile file names, wrong bytes), driven through httpx.MockTransport."""

from __future__ import annotations

import hashlib
import random

import httpx
import pytest

from sophon_cli.cli.hints import hint_for
from sophon_cli.client.errors import APIError, AuthError, IntegrityError
from sophon_cli.client.files import part_path
from sophon_cli.client.http import SophonClient
from sophon_cli.client.models import Job

KEY = "xt_live_EDGEKEY000111"
DATA = bytes(random.Random(0).getrandbits(8) for _ in range(10_000))
SHA = hashlib.sha256(DATA).hexdigest()


def job(**over):
    doc = {
        "id": "job_1",
        "status": "completed",
        "output": {"state": "available", "container": "mp4", "bytes": len(DATA), "sha256": SHA},
        "final_artifact": "encoded",
    }
    doc.update(over)
    return Job.model_validate(doc)


class Broken(httpx.SyncByteStream):
    """Yields ``data`` and then fails like a dropped connection."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        yield self.data
        raise httpx.ReadError("connection reset by peer")


class CDN:
    def __init__(self, location="/v1/downloads/tok1", behaviours=()):
        self.location = location
        self.behaviours = list(behaviours)
        self.requests: list[httpx.Request] = []
        self.outputs = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/output"):
            self.outputs += 1
            return httpx.Response(302, headers={"Location": self.location})
        behaviour = self.behaviours.pop(0) if self.behaviours else "normal"
        return behaviour(request) if callable(behaviour) else serve(request)


def serve(request, data=DATA, disposition='attachment; filename="out.mp4"', honour_range=True):
    rng = request.headers.get("range")
    if rng and honour_range:
        start = int(rng.split("=")[1].rstrip("-"))
        body = data[start:]
        return httpx.Response(
            206,
            content=body,
            headers={
                "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                "Content-Disposition": disposition,
            },
        )
    return httpx.Response(200, content=data, headers={"Content-Disposition": disposition})


def client_for(cdn, **kw):
    return SophonClient(
        "http://api.test/base",
        KEY,
        transport=httpx.MockTransport(cdn),
        sleep=lambda s: None,
        max_retries=3,
        **kw,
    )


def test_mid_body_drop_resumes_with_range(tmp_path):
    half = len(DATA) // 2
    cdn = CDN(
        behaviours=[
            lambda r: httpx.Response(
                200, stream=Broken(DATA[:half]), headers={"Content-Length": str(len(DATA))}
            )
        ]
    )
    result = client_for(cdn).downloads.download("job_1", tmp_path / "o.mp4", job=job())
    assert (tmp_path / "o.mp4").read_bytes() == DATA and result.sha256 == SHA
    downloads = [r for r in cdn.requests if "/downloads/" in r.url.path]
    assert "range" not in downloads[0].headers
    assert downloads[1].headers["range"] == f"bytes={half}-"


def test_range_ignored_restarts_from_zero(tmp_path):
    part_path(tmp_path / "o.mp4").write_bytes(DATA[:100])
    cdn = CDN(behaviours=[lambda r: serve(r, honour_range=False)])
    result = client_for(cdn).downloads.download("job_1", tmp_path / "o.mp4", job=job())
    assert (tmp_path / "o.mp4").read_bytes() == DATA and result.bytes == len(DATA)


def test_absolute_location_on_another_host_gets_no_credentials(tmp_path):
    cdn = CDN(location="https://cdn.example.net/signed/abc?X-Amz-Signature=s3cr3t")
    client_for(cdn).downloads.download("job_1", tmp_path / "o.mp4", job=job())
    api, fetch = cdn.requests
    assert api.url.host == "api.test" and api.headers["authorization"] == f"Bearer {KEY}"
    assert fetch.url.host == "cdn.example.net" and "authorization" not in fetch.headers


def test_relative_location_resolves_against_the_base_url():
    cdn = CDN(location="/v1/downloads/tok1")
    assert client_for(cdn).downloads.output_url("job_1") == "http://api.test/v1/downloads/tok1"
    cdn = CDN(location="v1/downloads/tok1")
    assert client_for(cdn).downloads.output_url("job_1") == "http://api.test/base/v1/downloads/tok1"


def test_expired_token_is_refreshed_once(tmp_path):
    def forbidden(r):
        return httpx.Response(
            403, json={"error": {"code": "forbidden", "message": "token expired", "retryable": False}}
        )

    cdn = CDN(behaviours=[forbidden])
    client_for(cdn).downloads.download("job_1", tmp_path / "o.mp4", job=job())
    assert cdn.outputs == 2 and (tmp_path / "o.mp4").read_bytes() == DATA
    cdn = CDN(behaviours=[forbidden, forbidden])
    with pytest.raises(AuthError) as info:
        client_for(cdn).downloads.download("job_1", tmp_path / "p.mp4", job=job())
    assert "fresh link" in hint_for(info.value) and "tok1" not in str(info.value)
    assert not (tmp_path / "p.mp4").exists()


def test_hostile_content_disposition_stays_in_the_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cdn = CDN(behaviours=[lambda r: serve(r, disposition='attachment; filename="../../etc/evil.mp4"')])
    result = client_for(cdn).downloads.download("job_1", out, job=job())
    assert result.path == str(out / "evil.mp4") and [p.name for p in out.iterdir()] == ["evil.mp4"]
    cdn = CDN(behaviours=[lambda r: serve(r, disposition='attachment; filename=".."')])
    result = client_for(cdn).downloads.download("job_1", out, job=job(), force=True)
    assert result.path == str(out / "job_1.mp4")


def test_wrong_bytes_never_reach_the_target(tmp_path):
    bad = bytearray(DATA)
    bad[5] ^= 0xFF
    cdn = CDN(behaviours=[lambda r: serve(r, data=bytes(bad))] * 3)
    with pytest.raises(IntegrityError) as info:
        client_for(cdn).downloads.download("job_1", tmp_path / "o.mp4", job=job())
    assert "sha256" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no target, no .part


def test_short_body_without_error_is_resumed(tmp_path):
    # the server claims the whole size but closes early with a clean 206 of a partial range
    def short(r):
        return httpx.Response(200, content=DATA[:4000], headers={"Content-Length": "4000"})

    cdn = CDN(behaviours=[short])
    result = client_for(cdn).downloads.download("job_1", tmp_path / "o.mp4", job=job())
    downloads = [r for r in cdn.requests if "/downloads/" in r.url.path]
    assert downloads[1].headers["range"] == "bytes=4000-" and result.sha256 == SHA


@pytest.mark.parametrize(
    "status,retryable",
    [(501, None), (503, False), (429, False)],
)
def test_download_retries_follow_the_one_retry_policy(tmp_path, status, retryable):
    # the API's rule: 501 is never retried, an explicit "retryable": false stops retries
    def refuse(request):
        err = {"code": "nope", "message": "no", "request_id": "req_x"}
        if retryable is not None:
            err["retryable"] = retryable
        return httpx.Response(status, json={"error": err})

    cdn = CDN(behaviours=[refuse] * 5)
    with pytest.raises(APIError) as info:
        client_for(cdn).downloads.download("job_1", tmp_path / "o.mp4", job=job())
    downloads = [r for r in cdn.requests if "/downloads/" in r.url.path]
    assert info.value.status == status and len(downloads) == 1 and info.value.attempts == 1
    assert not (tmp_path / "o.mp4").exists()


def test_download_retries_a_503_like_any_request(tmp_path):
    unavailable = lambda r: httpx.Response(503, json={"error": {"code": "busy", "message": "b"}})  # noqa: E731
    cdn = CDN(behaviours=[unavailable, unavailable])
    sleeps: list[float] = []
    c = SophonClient(
        "http://api.test/base", KEY, transport=httpx.MockTransport(cdn), sleep=sleeps.append, max_retries=3
    )
    c.downloads.download("job_1", tmp_path / "o.mp4", job=job())
    assert (tmp_path / "o.mp4").read_bytes() == DATA and len(sleeps) == 2
