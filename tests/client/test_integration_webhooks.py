"""Webhooks against the real local server: CRUD, and a real signed delivery verified by the client."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sophon_cli.cli.hints import hint_for
from sophon_cli.client import webhooks as wh
from sophon_cli.client.errors import NotFoundError, SignatureError
from sophon_cli.client.models import WebhookEvent


@pytest.fixture
def receiver():
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", got
    httpd.shutdown()
    httpd.server_close()


def test_crud(client):
    hook = client.webhooks.create("https://example.com/hook", name="ci")
    assert hook.id and hook.url == "https://example.com/hook"
    assert hook.secret and len(hook.secret) == 64 and hook.secret not in repr(hook)
    assert hook.id in {w.id for w in client.webhooks.list()}
    assert client.webhooks.delete(hook.id) is None
    assert hook.id not in {w.id for w in client.webhooks.list() if w.active is not False}
    with pytest.raises(NotFoundError) as info:
        client.webhooks.delete(hook.id)
    assert "sophon webhooks list" in hint_for(info.value)


def test_same_key_replays_create(client):
    a = client.webhooks.create("https://example.com/replay", idempotency_key="wh-test-1:create-webhook")
    b = client.webhooks.create("https://example.com/replay", idempotency_key="wh-test-1:create-webhook")
    assert a.id == b.id
    client.webhooks.delete(a.id)


def test_a_real_delivery_verifies(client, clip, receiver):
    url, got = receiver
    hook = client.webhooks.create(url)
    up = client.uploads.upload_file(clip)
    job = client.jobs.create(
        up.upload_id, profile="sophon-espresso", webhook_ids=[hook.id], metadata={"k": "v"}
    )
    client.jobs.wait(job.id, timeout=120)
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got, "no delivery arrived"
    headers, body = got[0]
    headers = {k.lower(): v for k, v in headers.items()}
    sig, ts = headers["x-turbo-signature-256"], headers["x-turbo-timestamp"]
    wh.verify_signature(body, sig, ts, hook.secret)  # real clock: the delivery is fresh
    event = WebhookEvent.model_validate_json(body)
    assert event.job_id == job.id and event.status == "completed" and event.metadata == {"k": "v"}
    with pytest.raises(SignatureError) as info:
        wh.verify_signature(body + b" ", sig, ts, hook.secret)
    assert info.value.reason == wh.SIGNATURE_MISMATCH
    with pytest.raises(SignatureError) as info:
        wh.verify_signature(body, sig, ts, "0" * 64)
    assert info.value.reason == wh.SIGNATURE_MISMATCH
    client.webhooks.delete(hook.id)
