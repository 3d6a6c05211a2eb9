"""Fault injection over a real socket, and the server's pure helpers."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from sophon_cli.server import faults, media, tokens
from sophon_cli.server.delivery import sign
from sophon_cli.server.routes import route_template
from sophon_cli.server.routes.uploads import chunk_size_for
from sophon_cli.server.util import redact_path

from .helpers import Api


def test_reset_drops_the_connection_mid_request(make_server):
    srv = make_server(faults="PUT /v1/uploads/*/parts/*=reset:1")
    api = Api(srv)
    try:
        up = api.create_upload("r.bin", 200_000)
        with pytest.raises(httpx.TransportError):
            api.put(f"/v1/uploads/{up['id']}/parts/0", content=b"x" * 200_000)
        assert api.get(f"/v1/uploads/{up['id']}").json()["received_chunks"] == []
        assert api.get("/healthz").status_code == 200  # the server itself is fine
    finally:
        api.close()


def test_retry_after_as_seconds_and_http_date(make_server):
    srv = make_server(faults="GET /v1/jobs=429:1:retry-after=date:2,GET /v1/webhooks=429:1:retry-after=3")
    api = Api(srv)
    try:
        r = api.get("/v1/jobs")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        when = email.utils.parsedate_to_datetime(r.headers["retry-after"]).timestamp()
        assert 1 <= when - time.time() <= 3.5
        assert api.get("/v1/webhooks").headers["retry-after"] == "3"
    finally:
        api.close()


def test_latency_and_seeded_probability(make_server):
    srv = make_server(faults="/v1/webhooks=latency:300ms,/v1/jobs=503:0.5", faults_seed=7)
    api = Api(srv)
    try:
        t = time.perf_counter()
        assert api.get("/v1/webhooks").status_code == 200
        assert time.perf_counter() - t >= 0.3
        codes = [api.get("/v1/jobs").status_code for _ in range(40)]
        assert set(codes) == {200, 503}
    finally:
        api.close()
    a, b = faults.FaultInjector("*=503:0.5", seed=3), faults.FaultInjector("*=503:0.5", seed=3)
    seq_a = [bool(a.roll("GET", "/v1/jobs")) for _ in range(50)]
    assert seq_a == [bool(b.roll("GET", "/v1/jobs")) for _ in range(50)] and 5 < sum(seq_a) < 45


def test_fault_spec_parsing():
    rules = faults.parse_faults(
        "PUT /v1/uploads/*/parts/*=reset:0.02,*=503:0.05,*=429:0.05:retry-after=date:1,*=latency:200ms"
    )
    assert [(r.method, r.pattern, r.kind, r.probability) for r in rules] == [
        ("PUT", "/v1/uploads/*/parts/*", "reset", 0.02),
        (None, "*", "status", 0.05),
        (None, "*", "status", 0.05),
        (None, "*", "latency", 1.0),
    ]
    assert rules[2].options == {"retry-after": "date:1"} and rules[3].latency == pytest.approx(0.2)
    assert rules[0].matches("PUT", "/v1/uploads/upl_1/parts/3")
    assert not rules[0].matches("GET", "/v1/uploads/upl_1/parts/3")
    assert not rules[1].matches("GET", "/healthz")  # health stays up under '*'
    for bad in ("nope", "*=teapot:1", "*=503:2", "*=latency", "*=429:1:retry-after=soon"):
        with pytest.raises(faults.FaultSpecError):
            faults.parse_faults(bad)


def test_tokens_sign_verify_expire_forge():
    s = tokens.TokenSigner("secret")
    tok, exp = s.issue("job_1", now=1000.0)
    assert exp == 1000 + 86400 and s.verify(tok, now=2000.0) == "job_1"
    assert tok != s.issue("job_1", now=1000.0)[0]  # a nonce makes every token unique
    with pytest.raises(tokens.TokenError, match="expired"):
        s.verify(tok, now=1000.0 + 86401)
    with pytest.raises(tokens.TokenError):
        tokens.TokenSigner("other").verify(tok, now=2000.0)
    with pytest.raises(tokens.TokenError):
        s.verify("garbage")


def test_pure_helpers():
    mb = 1024 * 1024
    assert chunk_size_for(10, None) == 10 and chunk_size_for(2 * 1024 * mb, None) == 16 * mb
    assert chunk_size_for(10, 4) == 4
    assert media.output_dims(1920, 1080, 720) == (1280, 720)
    assert media.output_dims(1920, 1080, 2160) is None  # no upscale
    assert media.output_dims(161, 121, None) == (160, 120)  # libx265 4:2:0 needs even dims
    assert media.output_dims(320, 180, 145) == (256, 144)
    assert media.parse_profile("sophon-cortado-hq-10bit") == ("cortado", True, True)
    assert media.auto_profile({"width": 160, "height": 120, "duration": 1}) == "sophon-cortado"
    assert media.auto_profile({"width": 3840, "height": 2160, "duration": 1}) == "sophon-espresso"
    assert route_template("PUT", "/v1/uploads/u/parts/3") == "PUT /v1/uploads/{id}/parts/{part_number}"
    assert route_template("GET", "/nope") == "GET <unmatched>"
    assert redact_path("/v1/downloads/abc.def") == "/v1/downloads/<redacted>"
    assert sign("k", "2026-01-01T00:00:00Z", b"{}") == (
        "sha256=" + __import__("hmac").new(b"k", b"2026-01-01T00:00:00Z.{}", "sha256").hexdigest()
    )


def test_ffmpeg_command_per_profile(tmp_path):
    info = {"width": 640, "height": 480, "audio_codec": "pcm_s16le"}
    cmd = media.ffmpeg_command(
        "ffmpeg",
        tmp_path / "a",
        tmp_path / "b",
        profile="sophon-americano-hq-10bit",
        info=info,
        container="mp4",
        audio=True,
        target_height=240,
    )
    joined = " ".join(cmd)
    assert "-preset slow" in joined and "-crf 22" in joined and "yuv420p10le" in joined and "main10" in joined
    assert "scale=320:240" in joined and "-c:a aac" in joined and "hvc1" in joined
    cmd = media.ffmpeg_command(
        "ffmpeg",
        tmp_path / "a",
        tmp_path / "b",
        profile="sophon-espresso",
        info=info,
        container="mkv",
        audio=False,
        target_height=None,
    )
    joined = " ".join(cmd)
    assert "-preset fast" in joined and "-crf 28" in joined and "-an" in joined and "matroska" in joined


def test_encode_progress_from_ffmpeg_keys():
    from sophon_cli.server.worker import _encode_progress, progress_doc

    p = _encode_progress({"frame": "30", "fps": "15.0", "out_time_us": "2000000"}, 60, 4.0)
    assert (p["phase"], p["phase_percent"], p["frames_done"], p["frames_total"]) == ("encoding", 50.0, 30, 60)
    assert p["eta_seconds"] == 2 and p["fps"] == 15.0 and 5 < p["percent"] < 90
    p = _encode_progress({"out_time_us": "1000000"}, None, 4.0)  # no frame count: use time
    assert p["phase_percent"] == 25.0 and p["eta_seconds"] is None
    assert progress_doc("queued", None)["percent"] == 0 and progress_doc("completed", 100)["percent"] == 100
