"""The retry policy: Retry-After parsing, backoff bounds, what is retried, and a bounded total.

Pure helpers are tested directly; the loop is driven through httpx.MockTransport with an injected
sleep so nothing really waits (a real server cannot produce an exact sequence of failures)."""

from __future__ import annotations

import email.utils
import json
import random
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from sophon_cli.client.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TransportError,
)
from sophon_cli.client.http import SophonClient
from sophon_cli.client.retry import (
    BACKOFF_CAP,
    RETRY_AFTER_CAP,
    backoff_delay,
    parse_retry_after,
    retry_delay,
    should_retry_status,
)

KEY = "xt_live_SECRETSECRET123"


# -- pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [("0", 0.0), ("3", 3.0), (" 120 ", 120.0), ("1.5", 1.5)])
def test_retry_after_delta_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_http_date():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    later = email.utils.format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(7.0)
    earlier = email.utils.format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "Wed, 99 Foo 2015", "1e3"])
def test_retry_after_garbage_is_none(value):
    assert parse_retry_after(value) is None


def test_retry_delay_caps_retry_after_and_prefers_it():
    rng = random.Random(1)
    assert retry_delay(0, 3.0, rng=rng) == 3.0
    assert retry_delay(0, 10_000.0, rng=rng) == RETRY_AFTER_CAP
    assert retry_delay(0, -1.0, rng=rng) == 0.0


def test_backoff_is_full_jitter_within_capped_exponential_bounds():
    rng = random.Random(42)
    for attempt in range(12):
        ceiling = min(BACKOFF_CAP, 0.5 * 2**attempt)
        draws = [backoff_delay(attempt, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # jitter covers the range, not a fixed value
        assert min(draws) < ceiling * 0.2
    assert backoff_delay(10_000, rng=rng) <= BACKOFF_CAP


@pytest.mark.parametrize(
    "status,env_retryable,expected",
    [
        (408, None, True),
        (429, None, True),
        (429, True, True),
        (429, False, False),  # e.g. quota_exceeded: waiting won't help
        (500, None, True),
        (502, None, True),
        (503, True, True),
        (501, None, False),
        (400, None, False),
        (400, True, False),
        (401, True, False),
        (403, None, False),
        (404, True, False),
        (422, True, False),
        (409, None, False),
        (409, False, False),
        (409, True, True),  # only an explicitly retryable 409 is retried
    ],
)
def test_should_retry_status(status, env_retryable, expected):
    assert should_retry_status(status, env_retryable) is expected


# -- the loop ----------------------------------------------------------------------------------------


def envelope(status, code, retryable, headers=None, request_id="req_env"):
    body = {
        "error": {
            "code": code,
            "message": f"{code} happened",
            "retryable": retryable,
            "request_id": request_id,
        }
    }
    return httpx.Response(status, json=body, headers=headers or {})


def job_body(job_id="job_1"):
    return {"id": job_id, "status": "queued", "created_at": "2026-01-01T00:00:00Z"}


class Script:
    """A MockTransport handler answering from a list of responses/exceptions, recording requests."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def make_client(script, **kw):
    sleeps: list[float] = []
    opts = dict(max_retries=4, retry_budget=1000.0, sleep=sleeps.append, rng=random.Random(7))
    opts.update(kw)
    client = SophonClient("http://sophon.test", KEY, transport=httpx.MockTransport(script), **opts)
    return client, sleeps


def test_retries_5xx_then_succeeds_with_auth_and_user_agent():
    script = Script(
        envelope(500, "internal_error", True), httpx.Response(502), httpx.Response(200, json=job_body())
    )
    client, sleeps = make_client(script)
    job = client.jobs.get("job_1")
    assert job.id == "job_1"
    assert len(script.requests) == 3 and len(sleeps) == 2
    req = script.requests[0]
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["user-agent"].startswith("sophon-cli/")


def test_retry_after_seconds_and_date_are_honoured():
    date = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    script = Script(
        envelope(429, "rate_limited", True, {"Retry-After": "2"}),
        envelope(503, "capacity_exceeded", True, {"Retry-After": date}),
        envelope(429, "rate_limited", True, {"Retry-After": "3600"}),
        httpx.Response(200, json=job_body()),
    )
    client, sleeps = make_client(script)
    client.jobs.get("job_1")
    assert sleeps[0] == 2.0
    assert 27.0 <= sleeps[1] <= 30.0
    assert sleeps[2] == RETRY_AFTER_CAP


@pytest.mark.parametrize(
    "status,code,exc",
    [
        (400, "validation_error", BadRequestError),
        (401, "unauthorized", AuthError),
        (403, "forbidden", AuthError),
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (422, "source_invalid", BadRequestError),
    ],
)
def test_client_errors_are_never_retried(status, code, exc):
    script = Script(envelope(status, code, False))
    client, sleeps = make_client(script)
    with pytest.raises(exc) as info:
        client.jobs.get("job_1")
    assert len(script.requests) == 1 and sleeps == []
    assert info.value.status == status and info.value.code == code
    assert info.value.request_id == "req_env"


def test_explicitly_retryable_409_is_retried():
    script = Script(envelope(409, "conflict", True), httpx.Response(200, json=job_body()))
    client, sleeps = make_client(script)
    client.jobs.get("job_1")
    assert len(script.requests) == 2


def test_max_retries_bounds_attempts_then_raises_typed_error():
    script = Script(envelope(503, "capacity_exceeded", True, {"Retry-After": "1"}))
    client, sleeps = make_client(script, max_retries=3)
    with pytest.raises(ServerError) as info:
        client.jobs.get("job_1")
    assert len(script.requests) == 4 and sleeps == [1.0, 1.0, 1.0]
    assert info.value.retryable is True and info.value.code == "capacity_exceeded"


def test_time_budget_bounds_the_total():
    now = [0.0]

    def sleep(s):
        now[0] += s

    script = Script(envelope(429, "rate_limited", True, {"Retry-After": "10"}))
    client, _ = make_client(script, max_retries=100, retry_budget=25.0, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(RateLimitError):
        client.jobs.get("job_1")
    assert len(script.requests) == 3  # 0s, 10s, 20s; a third 10s wait would pass the 25s budget
    assert now[0] == 20.0


def test_network_errors_retried_then_transport_error_names_base_url_not_key():
    script = Script(httpx.ConnectError("connection refused"))
    client, sleeps = make_client(script, max_retries=2)
    with pytest.raises(TransportError) as info:
        client.jobs.get("job_1")
    assert len(script.requests) == 3 and len(sleeps) == 2
    msg = str(info.value)
    assert "http://sophon.test" in msg and "3 attempts" in msg
    assert KEY not in msg and KEY not in repr(info.value) and KEY not in (info.value.hint or "")
    assert info.value.url == "http://sophon.test"


def test_post_retries_reuse_one_idempotency_key_and_random_keys_differ():
    script = Script(
        httpx.ReadTimeout("timed out"),
        envelope(500, "internal_error", True),
        httpx.Response(201, json=job_body()),
    )
    client, _ = make_client(script)
    client.jobs.create("upl_1")
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1
    script2 = Script(httpx.Response(201, json=job_body()))
    client2, _ = make_client(script2)
    client2.jobs.create("upl_1")
    client2.jobs.create("upl_1")
    k1, k2 = (r.headers["idempotency-key"] for r in script2.requests)
    assert k1 != k2 and 1 <= len(k1) <= 128


def test_given_idempotency_key_is_sent():
    script = Script(httpx.Response(201, json=job_body()))
    client, _ = make_client(script)
    client.jobs.create("upl_1", idempotency_key="my-key:create-job")
    assert script.requests[0].headers["idempotency-key"] == "my-key:create-job"
    sent = json.loads(script.requests[0].content)
    assert sent == {"source": {"type": "upload", "upload_id": "upl_1"}, "profile": "sophon-auto"}


def test_overlong_idempotency_key_is_input_error_before_any_request():
    from sophon_cli.client.errors import InputError

    script = Script(httpx.Response(201, json=job_body()))
    client, _ = make_client(script)
    with pytest.raises(InputError):
        client.jobs.create("upl_1", idempotency_key="k" * 129)
    assert script.requests == []
