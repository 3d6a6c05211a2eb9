"""Signed webhook deliveries to a local receiver, URL rules, restarts and shared data dirs."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .helpers import Api


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 recording deliveries; answers ``statuses`` in turn, then 200
    (a 3xx with ``Location: location``)."""

    def __init__(self, statuses=(), location=None):
        self.deliveries: list[tuple[dict, bytes]] = []
        self.statuses = list(statuses)
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
                if 300 <= code < 400 and location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                outer.event.set()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, n, timeout=15):
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < n:
            assert time.monotonic() < deadline, f"got {len(self.deliveries)} deliveries, wanted {n}"
            self.event.wait(0.1)
            self.event.clear()
        return self.deliveries

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def settled(server, webhook_id: str, timeout: float = 15.0) -> list[dict]:
    """Wait until every delivery queued for ``webhook_id`` is final (delivered or dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = server.core.store.deliveries_of(webhook_id)
        if all(r["state"] in ("delivered", "dropped") for r in rows):
            return rows
        assert time.monotonic() < deadline, f"deliveries still in flight: {rows}"
        time.sleep(0.02)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def verify(secret: str, headers: dict, body: bytes) -> None:
    ts = headers["x-turbo-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-turbo-signature-256"], expected)
    assert abs(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() - time.time()) < 60


def test_signed_delivery_arrives_and_verifies(server, receiver, clip, spec):
    from .helpers import SpecValidator

    api = Api(server)
    try:
        hook = api.post("/v1/webhooks", headers=api.ikey(), json={"url": receiver.url}).json()
        assert re.fullmatch(r"[0-9a-f]{64}", hook["secret"])
        listed = api.get("/v1/webhooks").json()["webhooks"]
        assert any(w["id"] == hook["id"] for w in listed) and all("secret" not in w for w in listed)
        job = api.create_job(
            api.upload(clip), "sophon-espresso", webhook_ids=[hook["id"]], metadata={"row": 42}
        )
        api.wait(job["id"])
        headers, body = receiver.wait_for(1)[0]
        verify(hook["secret"], headers, body)
        payload = json.loads(body)
        SpecValidator(spec).validate("WebhookDeliveryPayload", payload)
        assert payload["event_id"] == headers["x-turbo-event-id"]
        assert (payload["type"], payload["job_id"], payload["status"]) == (
            "job.completed",
            job["id"],
            "completed",
        )
        assert payload["metadata"] == {"row": 42}
        try:  # cross-check with the client library's verifier when it is present
            from sophon_cli.client.webhooks import verify_signature
        except ImportError:
            pass
        else:
            verify_signature(
                body, headers["x-turbo-signature-256"], headers["x-turbo-timestamp"], hook["secret"]
            )
        # canceling and failing notify too; a deleted webhook gets nothing
        uid = api.upload(clip)
        slow = api.create_job(
            uid, "sophon-espresso", webhook_ids=[hook["id"]], metadata={"sophon_local_delay": 30}
        )
        api.delete(f"/v1/jobs/{slow['id']}")
        failing = api.create_job(
            uid, "sophon-espresso", webhook_ids=[hook["id"]], metadata={"sophon_local_fail": True}
        )
        api.wait(failing["id"])
        types = {json.loads(b)["type"] for _, b in receiver.wait_for(3)}
        assert types == {"job.completed", "job.canceled", "job.failed"}
        assert api.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
        api.wait(api.create_job(uid, "sophon-espresso", metadata={"sophon_local_fail": True})["id"])
        r = api.post(
            "/v1/jobs",
            headers=api.ikey(),
            json={
                "source": {"type": "upload", "upload_id": uid},
                "profile": "sophon-auto",
                "webhook_ids": [hook["id"]],
            },
        )
        assert r.status_code == 400  # inactive webhooks cannot be subscribed
        assert [d["state"] for d in settled(server, hook["id"])] == ["delivered"] * 3
        assert len(receiver.deliveries) == 3
    finally:
        api.close()


def test_delivery_retries_with_the_same_event_then_gives_up(make_server, clip):
    flaky = Receiver(statuses=[500, 503])
    dead = Receiver(statuses=[500, 500, 500, 500])
    srv = make_server(webhook_retry_delays=(0.1, 0.2))
    api = Api(srv)
    try:
        h1 = api.post("/v1/webhooks", headers=api.ikey(), json={"url": flaky.url}).json()
        h2 = api.post("/v1/webhooks", headers=api.ikey(), json={"url": dead.url}).json()
        job = api.create_job(
            api.upload(clip),
            "sophon-espresso",
            webhook_ids=[h1["id"], h2["id"]],
            metadata={"sophon_local_fail": True},
        )
        api.wait(job["id"])
        got = flaky.wait_for(3)
        assert len({json.loads(b)["event_id"] for _, b in got}) == 1  # one event, three attempts
        for headers, body in got:
            verify(h1["secret"], headers, body)
        dead.wait_for(3)
        rows = settled(srv, h2["id"])
        assert [(d["state"], d["attempts"]) for d in rows] == [("dropped", 3)]
        assert len(dead.deliveries) == 3  # 3 attempts in total, then dropped
    finally:
        api.close()
        flaky.close()
        dead.close()


def test_webhook_url_rules(make_server):
    srv = make_server(allow_insecure_webhooks=False)
    api = Api(srv)
    try:
        for url in (
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://169.254.169.254/latest",
            "https://[::1]/x",
            "https://localhost/x",
            "https://user:pw@hooks.example.com/x",
            "ftp://hooks.example.com",
            "https:///nohost",
        ):
            r = api.post("/v1/webhooks", headers=api.ikey(), json={"url": url})
            assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", url
        r = api.post("/v1/webhooks", headers=api.ikey(), json={"url": "https://93.184.216.34/hook"})
        assert r.status_code == 201
    finally:
        api.close()


def test_restart_keeps_state_and_resumes_jobs(make_server, clip, tmp_path):
    data_dir = tmp_path / "persist"
    srv = make_server(data_dir)
    api = Api(srv)
    uid = api.upload(clip)
    hook = api.post("/v1/webhooks", headers=api.ikey(), json={"url": "https://hooks.example.com/h"}).json()
    done = api.wait(api.create_job(uid, "sophon-espresso")["id"])
    key = {"Idempotency-Key": "survives-restart"}
    body = {
        "source": {"type": "upload", "upload_id": uid},
        "profile": "sophon-espresso",
        "metadata": {"sophon_local_delay": 1.0},
    }
    interrupted = api.post("/v1/jobs", headers=key, json=body).json()
    api.wait(interrupted["id"], statuses=("encoding",))
    pending = api.create_upload("half.mp4", 10)
    api.put(f"/v1/uploads/{pending['id']}/parts/0", content=b"0123456789")
    api.close()
    srv.stop()  # mid-job: the worker gives the job back to the queue

    srv2 = make_server(data_dir)
    api = Api(srv2)
    try:
        assert api.get(f"/v1/uploads/{uid}").json()["status"] == "completed"
        assert api.get(f"/v1/uploads/{pending['id']}").json()["received_chunks"] == [0]
        assert [w["id"] for w in api.get("/v1/webhooks").json()["webhooks"]] == [hook["id"]]
        assert api.get(f"/v1/jobs/{done['id']}").json() == done
        assert api.download(done["id"]).status_code == 200
        replay = api.post("/v1/jobs", headers=key, json=body)
        assert replay.json()["id"] == interrupted["id"] and replay.headers["idempotent-replayed"] == "true"
        final = api.wait(interrupted["id"])
        assert final["status"] == "completed" and final["attempt"] == 2
    finally:
        api.close()


def test_a_second_server_on_one_data_dir_is_refused_before_it_touches_the_database(
    make_server, clip, tmp_path
):
    """One SQLite database, one server (issue 13): the second is refused (naming the first) and
    the first keeps encoding; once it stops, the data dir can be served again."""
    from sophon_cli.server.instance import DataDirInUse

    data_dir = tmp_path / "shared"
    a = make_server(data_dir)
    (data_dir / "server.json").write_text('{"url": "http://127.0.0.1:1", "pid": 4242}')
    with pytest.raises(DataDirInUse) as refused:
        make_server(data_dir)
    assert refused.value.state is not None and refused.value.state.pid == 4242
    assert "in use by a running server (pid 4242" in str(refused.value)
    api_a = Api(a)
    try:
        uid = api_a.upload(clip)
        ids = [api_a.create_job(uid, "sophon-espresso")["id"] for _ in range(2)]
        finals = [api_a.wait(j) for j in ids]
        assert all(f["status"] == "completed" and f["attempt"] == 1 for f in finals)
    finally:
        api_a.close()
    a.stop()
    b = make_server(data_dir)
    api_b = Api(b)
    try:
        assert api_b.get(f"/v1/jobs/{ids[0]}").json() == finals[0]
    finally:
        api_b.close()


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(make_server, clip):
    target = Receiver()
    redirecting = Receiver(statuses=[302, 302, 302], location=target.url)
    srv = make_server(webhook_retry_delays=(0.1, 0.1))
    api = Api(srv)
    try:
        hook = api.post("/v1/webhooks", headers=api.ikey(), json={"url": redirecting.url}).json()
        job = api.create_job(
            api.upload(clip),
            "sophon-espresso",
            webhook_ids=[hook["id"]],
            metadata={"sophon_local_fail": True},
        )
        api.wait(job["id"])
        rows = settled(srv, hook["id"])
        assert [(d["state"], d["attempts"], d["last_error"]) for d in rows] == [("dropped", 3, "HTTP 302")]
        assert len(redirecting.deliveries) == 3  # each 302 was retried like any non-2xx
        assert target.deliveries == []  # the redirect target was never contacted
    finally:
        api.close()
        target.close()
        redirecting.close()
