"""Error responses become typed exceptions with the facts and a next step; secrets never leak.

Real 401/404/409/400 responses are covered in test_integration_errors.py against the local server;
these use httpx.MockTransport only for edges the server does not produce (non-JSON bodies, a
missing envelope request id, a message echoing secrets)."""

from __future__ import annotations

import logging

import httpx
import pytest

from sophon_cli.cli.hints import hint_for
from sophon_cli.client.errors import APIError, AuthError, NotFoundError, ServerError, error_class_for_status
from sophon_cli.client.http import SophonClient, display_url, redact

KEY = "xt_live_TOPSECRETKEY42"


def client_for(handler, **kw):
    return SophonClient(
        "http://sophon.test",
        KEY,
        transport=httpx.MockTransport(handler),
        max_retries=0,
        sleep=lambda s: None,
        **kw,
    )


def test_non_json_error_body_still_yields_typed_error_with_header_request_id():
    def handler(request):
        return httpx.Response(502, text="<html>Bad Gateway</html>", headers={"X-Request-Id": "req_hdr"})

    with pytest.raises(ServerError) as info:
        client_for(handler).jobs.get("job_1")
    err = info.value
    assert err.status == 502 and err.code == "http_502" and err.request_id == "req_hdr"
    assert "502" in str(err) and "\n" not in str(err)
    assert hint_for(err)


def test_envelope_request_id_wins_over_header_and_missing_one_falls_back():
    def handler(request):
        rid = {"error": {"code": "not_found", "message": "job x not found", "retryable": False}}
        if request.url.path.endswith("a"):
            rid["error"]["request_id"] = "req_body"
        return httpx.Response(404, json=rid, headers={"X-Request-Id": "req_hdr"})

    c = client_for(handler)
    with pytest.raises(NotFoundError) as a:
        c.jobs.get("job_a")
    with pytest.raises(NotFoundError) as b:
        c.jobs.get("job_b")
    assert a.value.request_id == "req_body"
    assert b.value.request_id == "req_hdr"
    assert "sophon job list" in hint_for(a.value)


@pytest.mark.parametrize(
    "path_call,status,hint_part",
    [
        (lambda c: c.jobs.get("j"), 401, "SOPHON_API_KEY"),
        (lambda c: c.webhooks.delete("wh_1"), 404, "sophon webhooks list"),
        (lambda c: c.uploads.get("upl_1"), 404, "upload"),
        (lambda c: c.jobs.get("j"), 429, "wait"),
    ],
)
def test_hints_name_the_next_step(path_call, status, hint_part):
    def handler(request):
        return httpx.Response(status, json={"error": {"code": "x", "message": "m", "retryable": False}})

    with pytest.raises(APIError) as info:
        path_call(client_for(handler))
    assert hint_part in hint_for(info.value)


def test_multiline_or_secret_echoing_messages_are_cleaned():
    def handler(request):
        msg = f"bad key {KEY}\nsee /v1/downloads/tok.en-SECRET?x=1 for details"
        return httpx.Response(
            401, json={"error": {"code": "unauthorized", "message": msg, "retryable": False}}
        )

    with pytest.raises(AuthError) as info:
        client_for(handler).jobs.get("j")
    text = str(info.value) + repr(info.value)
    assert KEY not in text and "tok.en-SECRET" not in text and "\n" not in text


def test_client_repr_and_headers_never_show_the_key():
    c = client_for(lambda r: httpx.Response(200))
    assert KEY not in repr(c) and KEY not in str(c)
    assert "sophon.test" in repr(c)
    assert KEY not in repr(c._http.headers)


def test_invalid_json_success_body_is_a_typed_error():
    def handler(request):
        return httpx.Response(200, text="not json")

    with pytest.raises(ServerError) as info:
        client_for(handler).jobs.get("j")
    assert info.value.code == "invalid_response"


def test_response_missing_required_field_is_a_typed_error():
    def handler(request):
        return httpx.Response(200, json={"status": "queued"})  # no id

    with pytest.raises(ServerError) as info:
        client_for(handler).jobs.get("j")
    assert "Job" in str(info.value) and "id" in str(info.value)


def test_httpx_log_records_are_redacted(caplog):
    token = "eyJqb2IiOiJqb2JfMSJ9.SIGNATURE"

    def handler(request):
        if request.url.path.startswith("/v1/downloads/"):
            return httpx.Response(200, content=b"x")
        return httpx.Response(302, headers={"Location": f"/v1/downloads/{token}"})

    c = client_for(handler)
    with caplog.at_level(logging.DEBUG):
        assert c.downloads.output_url("job_1").endswith(token)
        c.anon_client().get(c.downloads.output_url("job_1"))
        logging.getLogger("httpx").info("echo %s", KEY)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request" in text  # httpx did log the requests...
    assert token not in text and KEY not in text  # ...without the token or the key
    assert "/v1/downloads/***" in text


def test_signed_url_fetch_carries_no_authorization():
    seen = []

    def handler(request):
        seen.append(request)
        if request.url.path.startswith("/v1/downloads/"):
            return httpx.Response(200, content=b"x")
        return httpx.Response(302, headers={"Location": "/v1/downloads/tok"})

    c = client_for(handler)
    c.anon_client().get(c.downloads.output_url("job_1"))
    assert "authorization" in seen[0].headers
    assert "authorization" not in seen[1].headers


def test_redact_and_display_url_helpers():
    assert display_url("https://user:pw@api.example.com/base/?key=1#f") == "https://api.example.com/base"
    assert redact("GET /v1/downloads/abc.def?x", ()) == "GET /v1/downloads/***?x"
    assert redact("https://s3/x?X-Amz-Signature=deadbeef&a=1") == "https://s3/x?X-Amz-Signature=***&a=1"
    assert redact("key xt_live_ABCDEF", ("xt_live_ABCDEF",)) == "key ***"


def test_library_hints_never_name_command_line_flags():
    # the library says what to do next as data (NextStep) and in plain words; only cli/hints.py
    # words it as flags and commands. Every hint literal of these modules must be flag-free.
    import re
    from pathlib import Path

    import sophon_cli.client as pkg

    root = Path(pkg.__file__).parent
    owned = [
        "http.py",
        "errors.py",
        "downloads.py",
        "jobs.py",
        "models.py",
        "retry.py",
        "files.py",
        "text.py",
    ]
    offenders = []
    for name in owned:
        source = (root / name).read_text(encoding="utf-8")
        for literal in re.findall(r'hint="([^"]*)"', source):
            if re.search(r"(^|\s)--[a-z]|`sophon ", literal):
                offenders.append(f"{name}: {literal}")
    assert offenders == []


@pytest.mark.parametrize(
    "status,code,path,words",
    [
        (409, "conflict", "/v1/jobs", "--new"),
        (409, "output_not_ready", "/v1/jobs/j/output", "sophon job wait"),
        (404, "not_found", "/v1/jobs/j", "sophon job list"),
        (403, "forbidden", "/v1/downloads/***", "fresh link"),
    ],
)
def test_the_cli_table_words_api_errors(status, code, path, words):
    from sophon_cli.cli.errors import classify

    err = error_class_for_status(status)(status, code, "m", request_id="req_1", path=path)
    assert err.hint is None and words in hint_for(err)
    _, line = classify(err)
    assert words in line and line.endswith("(request id req_1)")
