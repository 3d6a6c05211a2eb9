"""Webhooks: verification rejects every kind of tampering; 100 (reduced) / 1,000 (full) real signed
deliveries from the local server all verify; ``sophon webhooks listen`` processes each event_id once
across retried deliveries."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sophon_cli.client.errors import SignatureError
from sophon_cli.client.webhooks import compute_signature, verify_signature
from tests.conftest import TEST_KEY, _make_clip

from .conftest import popen_cli
from .stress import count

SECRET = "whsec_" + "ab" * 16
BODY = b'{"event_id":"evt_1","type":"job.completed","job_id":"job_1","status":"completed"}'
NOW = 1_800_000_000.0


def ts(offset: float = 0.0) -> str:
    return datetime.fromtimestamp(NOW + offset, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def reason_of(body, sig, stamp, secret=SECRET, now=NOW) -> str | None:
    try:
        verify_signature(body, sig, stamp, secret, now=now)
    except SignatureError as exc:
        assert "\n" not in str(exc)
        assert secret not in str(exc)
        return exc.reason
    return None


# ---------------------------------------------------------------------------------------------
# verification (pure)
# ---------------------------------------------------------------------------------------------


def test_valid_signature_is_accepted():
    assert reason_of(BODY, compute_signature(BODY, ts(), SECRET), ts()) is None


def test_wrong_secret_is_rejected():
    sig = compute_signature(BODY, ts(), SECRET + "x")
    assert reason_of(BODY, sig, ts()) == "signature_mismatch"


@pytest.mark.parametrize("bit", range(0, len(BODY) * 8, 37))
def test_one_bit_body_change_is_rejected(bit):
    sig = compute_signature(BODY, ts(), SECRET)
    tampered = bytearray(BODY)
    tampered[bit // 8] ^= 1 << (bit % 8)
    assert reason_of(bytes(tampered), sig, ts()) == "signature_mismatch"


def test_one_bit_signature_change_is_rejected():
    sig = compute_signature(BODY, ts(), SECRET)
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert reason_of(BODY, flipped, ts()) == "signature_mismatch"


def test_signed_timestamp_cannot_be_swapped():
    sig = compute_signature(BODY, ts(-10), SECRET)
    assert reason_of(BODY, sig, ts()) == "signature_mismatch"


@pytest.mark.parametrize("skew", [301, 600, 86400, -301, -600, -86400])
def test_timestamp_skew_over_300s_either_direction_is_rejected(skew):
    stamp = ts(-skew)  # skew > 0: old; < 0: in the future
    sig = compute_signature(BODY, stamp, SECRET)
    assert reason_of(BODY, sig, stamp) == "timestamp_out_of_tolerance"


@pytest.mark.parametrize("skew", [0, 299, -299])
def test_timestamp_skew_within_300s_is_accepted(skew):
    stamp = ts(-skew)
    assert reason_of(BODY, compute_signature(BODY, stamp, SECRET), stamp) is None


@pytest.mark.parametrize(
    "sig,stamp,reason",
    [
        (None, "T", "missing_signature"),
        ("", "T", "missing_signature"),
        ("S", None, "missing_timestamp"),
        ("S", "", "missing_timestamp"),
    ],
)
def test_missing_headers_are_rejected(sig, stamp, reason):
    good_sig = compute_signature(BODY, ts(), SECRET)
    sig = good_sig if sig == "S" else sig
    stamp = ts() if stamp == "T" else stamp
    assert reason_of(BODY, sig, stamp) == reason


@pytest.mark.parametrize("prefix", ["sha1=", "sha512=", "", "v1=", "sha256:"])
def test_bad_prefix_is_rejected(prefix):
    hexpart = compute_signature(BODY, ts(), SECRET)[len("sha256=") :]
    assert reason_of(BODY, prefix + hexpart, ts()) == "bad_prefix"


@pytest.mark.parametrize(
    "hexpart",
    ["zz" * 32, "ab" * 31, "ab" * 33, "", "0x" + "ab" * 31, "ab" * 31 + "a\u00e9"],
)
def test_bad_hex_is_rejected(hexpart):
    assert reason_of(BODY, "sha256=" + hexpart, ts()) == "bad_hex"


def test_garbage_timestamp_is_rejected():
    sig = compute_signature(BODY, "yesterday", SECRET)
    assert reason_of(BODY, sig, "yesterday") == "bad_timestamp"


# ---------------------------------------------------------------------------------------------
# real deliveries from the local server
# ---------------------------------------------------------------------------------------------


class _Sink:
    """A webhook endpoint on loopback that records every delivery (raw body + headers)."""

    def __init__(self, status_for=None) -> None:
        self.records: list[tuple[str, dict, bytes]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.lock:
                    sink.records.append((self.path, dict(self.headers.items()), body))
                status = status_for(self.path, dict(self.headers.items()), body) if status_for else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completed_upload(client, tmp_path) -> str:
    clip = _make_clip(tmp_path / "hook-src.mp4", seconds=0.4, size="64x64")
    return client.uploads.upload_file(clip).upload_id


def _cancel_jobs(client, upload_id, webhook_ids, n) -> list[str]:
    ids = []
    for i in range(n):
        job = client.jobs.create(
            upload_id,
            webhook_ids=webhook_ids,
            metadata={"sophon_local_delay": 60, "i": i},
            idempotency_key=f"rel-hooks-{i}-{time.time_ns()}",
        )
        client.jobs.cancel(job.id)
        ids.append(job.id)
    return ids


@pytest.mark.stress
def test_valid_deliveries_from_local_server_all_verify(make_server, tmp_path):
    from sophon_cli.client.http import SophonClient

    hooks_n = 20
    jobs_n = count(5, 50)  # deliveries = jobs x hooks: 100 reduced, 1,000 full
    sink = _Sink()
    srv = make_server(webhook_retry_delays=(0.2, 0.5))
    try:
        with SophonClient(srv.url, TEST_KEY) as client:
            secrets = {}
            for i in range(hooks_n):
                hook = client.webhooks.create(f"{sink.url}/hook/{i}")
                secrets[f"/hook/{i}"] = hook.secret
            webhook_ids = [w.id for w in client.webhooks.list()]
            assert len(webhook_ids) == hooks_n
            upload_id = _completed_upload(client, tmp_path)
            job_ids = _cancel_jobs(client, upload_id, webhook_ids, jobs_n)
        expected = jobs_n * hooks_n
        deadline = time.monotonic() + 120
        while len(sink.records) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # nothing extra should arrive
    finally:
        sink.close()
    records = list(sink.records)
    assert len(records) == expected
    events = set()
    for path, headers, body in records:
        verify_signature(
            body, headers.get("X-Turbo-Signature-256"), headers.get("X-Turbo-Timestamp"), secrets[path]
        )
        event = json.loads(body)
        assert event["type"] == "job.canceled" and event["job_id"] in job_ids
        assert headers.get("X-Turbo-Event-Id") == event["event_id"]
        # the same body under another endpoint's secret does not verify
        other = secrets["/hook/0" if path != "/hook/0" else "/hook/1"]
        with pytest.raises(SignatureError):
            verify_signature(body, headers["X-Turbo-Signature-256"], headers["X-Turbo-Timestamp"], other)
        events.add(event["event_id"])
    assert len(events) == expected


class _FlakyRelay:
    """Sits between the server and `listen`: passes every delivery through unchanged (raw body and
    X-Turbo-* headers), but tells the server the first attempt of each event failed (and every
    third event's second attempt too), so the server retries deliveries `listen` already got."""

    def __init__(self) -> None:
        self.target = ""
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()

        def status_for(path, headers, body):
            event_id = json.loads(body)["event_id"]
            with self.lock:
                n = self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
            fwd = {k: v for k, v in headers.items() if k.lower().startswith("x-turbo-")}
            fwd["Content-Type"] = "application/json"
            req = urllib.request.Request(self.target, data=body, headers=fwd, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    code = resp.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            if n == 1 or (n == 2 and _third(event_id)):
                return 503
            return code

        self.sink = _Sink(status_for)

    def close(self):
        self.sink.close()


def _third(event_id: str) -> bool:
    return int(event_id[-2:], 16) % 3 == 0


@pytest.mark.stress
def test_listen_processes_each_event_once_across_retried_deliveries(make_server, tmp_path):
    from sophon_cli.client.http import SophonClient

    jobs_n = count(6, 30)
    srv = make_server(webhook_retry_delays=(0.2, 0.3))
    relay = _FlakyRelay()
    listen = None
    try:
        with SophonClient(srv.url, TEST_KEY) as client:
            hook = client.webhooks.create(relay.sink.url + "/")
            upload_id = _completed_upload(client, tmp_path)
            listen = popen_cli(
                "--json", "webhooks", "listen", "--port", "0", "--secret", hook.secret, home=tmp_path / "home"
            )
            line = listen.stderr.readline()
            assert "listening on http://127.0.0.1:" in line, line
            relay.target = "http://127.0.0.1:" + line.split("127.0.0.1:")[1].split("/")[0] + "/"
            job_ids = _cancel_jobs(client, upload_id, [hook.id], jobs_n)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with relay.lock:
                done = len(relay.attempts) == jobs_n and all(
                    n >= (3 if _third(e) else 2) for e, n in relay.attempts.items()
                )
            if done:
                break
            time.sleep(0.1)
        time.sleep(0.3)
        listen.send_signal(signal.SIGINT)
        out, err = listen.communicate(timeout=20)
    finally:
        relay.close()
        if listen is not None and listen.poll() is None:
            listen.kill()
            listen.communicate()
    assert sum(relay.attempts.values()) >= 2 * jobs_n  # every delivery really was retried
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    ids = [e["event_id"] for e in events]
    assert sorted(ids) == sorted(relay.attempts), (ids, relay.attempts)
    assert len(ids) == len(set(ids)) == jobs_n
    assert {e["job_id"] for e in events} == set(job_ids)
    assert "Traceback" not in err


def test_listen_rejects_forged_deliveries_and_prints_only_verified_events(tmp_path):
    from datetime import datetime, timezone

    secret = "whsec_listen_" + "c" * 20
    listen = popen_cli(
        "--json", "webhooks", "listen", "--port", "0", "--secret", secret, home=tmp_path / "home"
    )
    try:
        line = listen.stderr.readline()
        assert "listening on http://127.0.0.1:" in line, line
        url = "http://127.0.0.1:" + line.split("127.0.0.1:")[1].split("/")[0] + "/"

        def send(body: bytes, stamp: str, sig: str) -> int:
            req = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={
                    "X-Turbo-Signature-256": sig,
                    "X-Turbo-Timestamp": stamp,
                    "Content-Type": "application/json",
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        now = datetime.now(timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        old = datetime.fromtimestamp(now.timestamp() - 900, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        good = b'{"event_id":"evt_ok","type":"job.completed","job_id":"job_1","status":"completed"}'
        forged = good.replace(b"evt_ok", b"evt_forged")
        statuses = [
            send(good, stamp, compute_signature(good, stamp, secret)),
            send(forged, stamp, compute_signature(good, stamp, secret)),  # body changed after signing
            send(forged, stamp, compute_signature(forged, stamp, secret + "x")),  # wrong secret
            send(forged, old, compute_signature(forged, old, secret)),  # replayed 15 minutes later
            send(forged, stamp, "sha256=" + "0" * 64),
            send(forged, stamp, ""),
            send(good, stamp, compute_signature(good, stamp, secret)),  # a duplicate of the first
        ]
        time.sleep(0.3)
        listen.send_signal(signal.SIGINT)
        out, err = listen.communicate(timeout=20)
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.communicate()
    assert statuses[0] == 200 and statuses[-1] == 200
    assert all(400 <= s < 500 for s in statuses[1:-1]), statuses
    events = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert [e["event_id"] for e in events] == ["evt_ok"]
    assert secret not in out + err
