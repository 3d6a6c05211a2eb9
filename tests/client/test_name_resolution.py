"""A host name that does not resolve: said at once (no retries), naming the host and the next step,
exit 8. ``.invalid`` is guaranteed never to resolve (RFC 6761), so the real resolver answers
EAI_NONAME offline. EAI_AGAIN (the resolver did not answer) cannot be produced on demand, so its
one retry is checked on the pure policy and through a transport that raises the resolver's real
``socket.gaierror``; genuinely transient failures keep the whole retry budget."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from sophon_cli.client.errors import NameResolutionError, NextStep, TransportError
from sophon_cli.client.http import SophonClient
from sophon_cli.client.retry import NameFailure, RetryPolicy, name_failure
from tests.helpers.env import cli_env

HOST = "no-such-host.invalid"
KEY = "name-test-key-0123456789"


def _wrapped(code: int) -> httpx.ConnectError:
    """What httpx raises for a getaddrinfo failure: ConnectError caused by httpcore's, caused by
    the gaierror (built by raising, so the chain is the real one)."""
    try:
        try:
            raise socket.gaierror(code, "resolver says no")
        except socket.gaierror as inner:
            raise httpx.ConnectError(str(inner)) from inner
    except httpx.ConnectError as exc:
        return exc


def test_the_real_resolver_failure_is_classified_not_found():
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo(HOST, 80)
    assert name_failure(info.value) is NameFailure.NOT_FOUND
    assert name_failure(_wrapped(socket.EAI_NONAME)) is NameFailure.NOT_FOUND
    assert name_failure(_wrapped(socket.EAI_AGAIN)) is NameFailure.TEMPORARY
    assert name_failure(httpx.ConnectError("[Errno 111] Connection refused")) is None
    assert name_failure(ConnectionRefusedError(111, "refused")) is None


def test_the_policy_retries_a_missing_name_never_a_temporary_one_once_others_fully():
    policy = RetryPolicy(max_retries=5, budget=1000.0)
    state = policy.start()
    state.begin()
    assert state.next_delay(reason="ConnectError", error=_wrapped(socket.EAI_NONAME)) is None

    state = policy.start()
    state.begin()
    assert state.next_delay(reason="ConnectError", error=_wrapped(socket.EAI_AGAIN)) is not None
    state.begin()
    assert state.next_delay(reason="ConnectError", error=_wrapped(socket.EAI_AGAIN)) is None

    state = policy.start()
    delays = []
    for _ in range(10):
        state.begin()
        delay = state.next_delay(reason="ConnectError", error=ConnectionRefusedError(111, "refused"))
        if delay is None:
            break
        delays.append(delay)
    assert len(delays) == 5  # connection refused keeps the whole retry budget


def test_an_unknown_host_fails_at_once_naming_the_host():
    sleeps: list[float] = []
    with SophonClient(f"http://{HOST}", KEY, sleep=sleeps.append) as c:
        with pytest.raises(NameResolutionError) as info:
            c.jobs.list()
    err = info.value
    assert isinstance(err, TransportError)  # exit 8 with the other unreachable servers
    assert sleeps == [] and err.attempts == 1
    assert err.host == HOST and err.failure is NameFailure.NOT_FOUND
    assert err.next_step is NextStep.CHECK_HOST_NAME
    assert f"cannot resolve the host name {HOST!r}" in str(err) and KEY not in str(err)


def test_a_temporary_resolver_failure_is_retried_once():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        raise _wrapped(socket.EAI_AGAIN)

    sleeps: list[float] = []
    events = []
    with SophonClient(
        "http://api.example.test",
        KEY,
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        on_retry=events.append,
    ) as c:
        with pytest.raises(NameResolutionError) as info:
            c.jobs.get("job_1")
    assert len(calls) == 2 and len(sleeps) == 1
    # the one retry is announced as one of one, with the resolver named as the reason
    assert [(e.attempt, e.max_attempts, e.reason) for e in events] == [
        (1, 2, "the DNS resolver did not answer")
    ]
    err = info.value
    assert err.failure is NameFailure.TEMPORARY and err.attempts == 2
    assert err.next_step is NextStep.CHECK_DNS and "did not answer" in str(err)


def test_the_cli_says_it_in_one_line_with_exit_8_after_one_attempt(tmp_path):
    env = cli_env(server=f"http://{HOST}", home=tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "sophon_cli", "-v", "job", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 8, res.stderr
    lines = res.stderr.splitlines()
    assert len([ln for ln in lines if ln.startswith("http: ")]) == 1, res.stderr  # one attempt
    assert not any(ln.startswith("retrying") for ln in lines), res.stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr
    assert f"cannot resolve the host name {HOST!r}" in errors[0]
    assert "check the host name in the base URL (set by SOPHON_BASE_URL)" in errors[0]
