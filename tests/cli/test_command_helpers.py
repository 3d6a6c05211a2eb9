"""Plain unit tests of the pure parts of the resource commands (no server, no subprocess)."""

from __future__ import annotations

import io
import json
import stat
import time

import pytest

from sophon_cli.cli.job import (
    build_metadata,
    check_height,
    failed_error,
    failure_reason,
    job_line,
    parse_metadata_value,
    progress_description,
    progress_text,
    short_time,
)
from sophon_cli.cli.output import Output
from sophon_cli.cli.webhooks import Receiver, load_saved_secrets, resolve_secrets, save_secret
from sophon_cli.client.errors import InputError, JobFailedError
from sophon_cli.client.webhooks import compute_signature


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("1.5", 1.5),
        ("true", True),
        ("null", None),
        ('"7"', "7"),
        ('{"a": [1]}', {"a": [1]}),
        ("hello", "hello"),
        ("", ""),
        ("NaN", "NaN"),  # not JSON: kept as the string
        ("{broken", "{broken"),
    ],
)
def test_metadata_values_are_json_when_valid_else_strings(text, value):
    assert parse_metadata_value(text) == value


def test_build_metadata_merges_file_then_pairs():
    meta = build_metadata(["b=2", "c=x=y", " d =[1]"], '{"a": 1, "b": 1}', file_name="m.json")
    assert meta == {"a": 1, "b": 2, "c": "x=y", "d": [1]}
    assert build_metadata(None, None) is None
    assert build_metadata([], "{}") == {}


@pytest.mark.parametrize(
    ("pairs", "text", "needle"),
    [
        (["novalue"], None, "KEY=VALUE"),
        (["=1"], None, "KEY=VALUE"),
        (None, "[1]", "JSON object"),
        (None, "{oops", "not valid JSON"),
        (None, '{"x": NaN}', "not valid JSON"),
        (["big=" + "x" * 16400], None, "16384"),
    ],
)
def test_build_metadata_rejects(pairs, text, needle):
    with pytest.raises(InputError) as info:
        build_metadata(pairs, text, file_name="m.json")
    assert needle in str(info.value)


def test_metadata_limit_is_exactly_16_kib():
    filler = "x" * (16 * 1024 - len('{"k":""}'))
    assert build_metadata([f"k={filler}"], None) == {"k": filler}
    with pytest.raises(InputError):
        build_metadata([f"k={filler}x"], None)


@pytest.mark.parametrize("height", [144, 1080, 4320, None])
def test_height_in_range(height):
    assert check_height(height) == height


@pytest.mark.parametrize("height", [0, 143, 4321, -1])
def test_height_out_of_range(height):
    with pytest.raises(InputError, match="144 and 4320"):
        check_height(height)


def _job(**kw):
    base = {"id": "job_1", "status": "encoding", "progress": {"phase": "encoding", "percent": 42.4}}
    base.update(kw)
    return base


def test_job_rendering_helpers():
    assert job_line(_job(status="queued")) == "job_1  queued"
    assert job_line(_job(status="completed", final_artifact="original")).endswith(
        "no smaller output was made)"
    )
    assert job_line(_job(status="failed", error="boom", status_reason="encode_failed")) == (
        "job_1  failed  (boom (encode_failed))"
    )
    assert failure_reason(_job(status_reason="canceled_by_user")) == "canceled_by_user"
    assert progress_text(_job()) == "42%" and progress_text(_job(status="completed")) == "100%"
    desc = progress_description(
        _job(progress={"phase": "encoding", "percent": 5, "fps": 29.7, "eta_seconds": 12})
    )
    assert desc == "job_1 encoding 30 fps eta 12s"
    assert short_time("2026-01-02T03:04:05.123Z") == "2026-01-02 03:04:05"
    assert short_time(None) == ""


def test_failed_error_names_the_first_bad_job():
    assert failed_error([_job(status="completed")]) is None
    err = failed_error(
        [_job(status="completed"), _job(id="job_2", status="canceled"), _job(id="job_3", status="failed")]
    )
    assert isinstance(err, JobFailedError)
    assert "job job_2 ended canceled" in str(err) and "1 more" in str(err)


# ---- webhook secrets and the listen receiver -----------------------------------------------------


def test_saved_secrets_are_private_and_found(tmp_path, monkeypatch):
    monkeypatch.setenv("SOPHON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SOPHON_WEBHOOK_SECRET", raising=False)
    assert resolve_secrets(None) == []
    path = save_secret("wh_1", "secret-one", "https://a.example/hook")
    save_secret("wh_2", "secret-two", "https://b.example/hook")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_saved_secrets() == {"wh_1": "secret-one", "wh_2": "secret-two"}
    assert resolve_secrets(None) == ["secret-one", "secret-two"]
    monkeypatch.setenv("SOPHON_WEBHOOK_SECRET", "from-env")
    assert resolve_secrets(None) == ["from-env"]
    assert resolve_secrets("flag") == ["flag"]


def _delivery(event_id: str, secret: str, *, ts: str | None = None) -> tuple[dict, bytes]:
    body = json.dumps(
        {"event_id": event_id, "type": "job.completed", "job_id": "job_9", "status": "completed"}
    )
    ts = ts or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    headers = {"X-Turbo-Timestamp": ts, "X-Turbo-Signature-256": compute_signature(body.encode(), ts, secret)}
    return headers, body.encode()


def _receiver(**kw) -> tuple[Receiver, io.StringIO, io.StringIO]:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(stdout=stdout, stderr=stderr, json_mode=kw.pop("json_mode", False), is_tty=False)
    return Receiver(out, kw.pop("secrets", ["k1", "k2"]), **kw), stdout, stderr


def test_receiver_verifies_dedupes_and_counts():
    rx, stdout, stderr = _receiver(max_events=2)
    assert rx.handle(*_delivery("evt_a", "wrong")) == (401, "signature_mismatch")
    assert rx.handle(*_delivery("evt_a", "k2")) == (200, "ok")  # any known secret verifies
    assert rx.handle(*_delivery("evt_a", "k1")) == (200, "duplicate")
    rx.check_done()
    assert not rx.finished.is_set()
    old = _delivery("evt_b", "k1", ts="2020-01-01T00:00:00Z")
    assert rx.handle(*old) == (401, "timestamp_out_of_tolerance")
    assert rx.handle(*_delivery("evt_b", "k1")) == (200, "ok")
    rx.check_done()
    assert rx.finished.is_set()
    lines = stdout.getvalue().splitlines()
    assert len(lines) == 2 and "evt_a" in lines[0] and "job.completed" in lines[0] and "evt_b" in lines[1]
    assert "signature_mismatch" in stderr.getvalue() and "k1" not in stderr.getvalue()


def test_receiver_rejects_signed_bodies_without_event_id():
    rx, stdout, _ = _receiver()
    body = b'{"type": "job.completed"}'
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    headers = {"X-Turbo-Timestamp": ts, "X-Turbo-Signature-256": compute_signature(body, ts, "k1")}
    assert rx.handle(headers, body)[0] == 400
    assert stdout.getvalue() == ""


def test_receiver_json_lines_are_the_event_bodies():
    rx, stdout, _ = _receiver(json_mode=True)
    headers, body = _delivery("evt_j", "k1")
    rx.handle(headers, body)
    assert json.loads(stdout.getvalue()) == json.loads(body)


def test_receiver_failed_forward_is_not_marked_seen():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rx, stdout, stderr = _receiver(forward_to=f"http://127.0.0.1:{port}/")
    try:
        headers, body = _delivery("evt_f", "k1")
        assert rx.handle(headers, body) == (502, "forward failed")
        assert rx.handle(headers, body) == (502, "forward failed")  # the retry is forwarded again
        assert stdout.getvalue() == "" and "evt_f" in stderr.getvalue()
        assert rx.count == 0
    finally:
        rx.close()
