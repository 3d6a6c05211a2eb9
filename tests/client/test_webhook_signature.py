"""verify_signature: pure, constant-time, with a precise reason for every failure."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from sophon_cli.client import webhooks as wh
from sophon_cli.client.errors import SignatureError, SophonError

SECRET = "a" * 64
BODY = b'{"event_id":"evt_1","type":"job.completed","job_id":"job_1","status":"completed","metadata":{}}'
TS = "2026-01-02T03:04:05Z"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()


def sign(body=BODY, ts=TS, secret=SECRET):
    # independent of the module under test: the contract's formula written out
    return "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def reason_of(**kw):
    args = dict(body=BODY, signature=sign(), timestamp=TS, secret=SECRET, now=NOW)
    args.update(kw)
    with pytest.raises(SignatureError) as info:
        wh.verify_signature(
            args.pop("body"), args.pop("signature"), args.pop("timestamp"), args.pop("secret"), **args
        )
    assert isinstance(info.value, SophonError) and info.value.reason in wh.REASONS
    assert "\n" not in str(info.value)
    return info.value.reason


def test_valid_signature_passes():
    assert wh.verify_signature(BODY, sign(), TS, SECRET, now=NOW) is None
    assert wh.compute_signature(BODY, TS, SECRET) == sign()
    # uppercase hex and a datetime "now" are accepted too
    sig = "sha256=" + sign()[7:].upper()
    wh.verify_signature(BODY, sig, TS, SECRET, now=datetime.fromtimestamp(NOW, timezone.utc))


def test_offsets_and_fractions_and_epoch_seconds():
    for ts in ("2026-01-02T05:04:05+02:00", "2026-01-02T03:04:05.123456789Z", str(int(NOW))):
        wh.verify_signature(BODY, sign(ts=ts), ts, SECRET, now=NOW)


@pytest.mark.parametrize(
    "kw,reason",
    [
        ({"signature": None}, wh.MISSING_SIGNATURE),
        ({"signature": "  "}, wh.MISSING_SIGNATURE),
        ({"timestamp": None}, wh.MISSING_TIMESTAMP),
        ({"timestamp": ""}, wh.MISSING_TIMESTAMP),
        ({"signature": "md5=" + "0" * 64}, wh.BAD_PREFIX),
        ({"signature": "0" * 64}, wh.BAD_PREFIX),
        ({"signature": "sha256=xyz"}, wh.BAD_HEX),
        ({"signature": "sha256=" + "0" * 63}, wh.BAD_HEX),
        ({"timestamp": "yesterday"}, wh.BAD_TIMESTAMP),
        ({"timestamp": "2026-01-02T03:04:05"}, wh.BAD_TIMESTAMP),  # no offset
        ({"timestamp": "2026-13-02T03:04:05Z"}, wh.BAD_TIMESTAMP),
        ({"body": BODY + b" "}, wh.SIGNATURE_MISMATCH),
        ({"secret": "b" * 64}, wh.SIGNATURE_MISMATCH),
        ({"signature": "sha256=" + "0" * 64}, wh.SIGNATURE_MISMATCH),
    ],
)
def test_failure_reasons(kw, reason):
    assert reason_of(**kw) == reason


def test_tolerance_both_ways():
    old = (datetime.fromtimestamp(NOW, timezone.utc) - timedelta(seconds=301)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = (datetime.fromtimestamp(NOW, timezone.utc) + timedelta(seconds=301)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert reason_of(timestamp=old, signature=sign(ts=old)) == wh.TIMESTAMP_OUT_OF_TOLERANCE
    assert reason_of(timestamp=future, signature=sign(ts=future)) == wh.TIMESTAMP_OUT_OF_TOLERANCE
    edge = (datetime.fromtimestamp(NOW, timezone.utc) - timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%SZ")
    wh.verify_signature(BODY, sign(ts=edge), edge, SECRET, now=NOW)
    wh.verify_signature(BODY, sign(ts=old), old, SECRET, now=NOW, tolerance=600)


def test_signature_is_bound_to_the_timestamp():
    other = "2026-01-02T03:04:06Z"
    assert reason_of(timestamp=other) == wh.SIGNATURE_MISMATCH


def test_uses_constant_time_compare(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(wh.hmac, "compare_digest", spy)
    wh.verify_signature(BODY, sign(), TS, SECRET, now=NOW)
    assert len(calls) == 1
