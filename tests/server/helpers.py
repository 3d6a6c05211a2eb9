"""Test helpers: a thin raw-HTTP API wrapper (httpx over a real loopback socket) and spec validation."""

from __future__ import annotations

import copy
import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

TERMINAL = ("completed", "failed", "canceled")


class Api:
    def __init__(self, server, key: str | None = None) -> None:
        self.server = server
        self.key = key if key is not None else server.api_keys[0]
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )

    def close(self) -> None:
        self.http.close()

    def __getattr__(self, name):  # get/post/put/delete/request
        return getattr(self.http, name)

    @staticmethod
    def ikey() -> dict[str, str]:
        return {"Idempotency-Key": secrets.token_hex(12)}

    def create_upload(self, name: str, size: int, mime: str = "video/mp4") -> dict[str, Any]:
        r = self.http.post(
            "/v1/uploads", headers=self.ikey(), json={"file_name": name, "file_size": size, "mime_type": mime}
        )
        assert r.status_code == 201, r.text
        return r.json()

    def upload(self, path: Path, *, complete: bool = True) -> str:
        data = Path(path).read_bytes()
        up = self.create_upload(Path(path).name, len(data))
        cs = up["chunk_size"]
        for i in range(up["total_chunks"]):
            r = self.http.put(f"/v1/uploads/{up['id']}/parts/{i}", content=data[i * cs : (i + 1) * cs])
            assert r.status_code == 200, r.text
        if complete:
            r = self.http.post(f"/v1/uploads/{up['id']}/complete", headers=self.ikey())
            assert r.status_code == 200, r.text
        return up["id"]

    def create_job(self, upload_id: str, profile: str = "sophon-espresso", **extra: Any) -> dict[str, Any]:
        body = {"source": {"type": "upload", "upload_id": upload_id}, "profile": profile, **extra}
        r = self.http.post("/v1/jobs", headers=self.ikey(), json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def wait(self, job_id: str, timeout: float = 60.0, statuses=TERMINAL) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, f"job {job_id} stuck in {job['status']}"
            time.sleep(0.05)

    def download(self, job_id: str) -> httpx.Response:
        r = self.http.get(f"/v1/jobs/{job_id}/output")
        assert r.status_code == 302, r.text
        location = r.headers["location"]
        assert location.startswith(self.server.url + "/v1/downloads/"), location  # absolute (format: uri)
        return httpx.get(location, timeout=60)


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0-style ``nullable: true`` -> JSON Schema ``null`` alternatives (recursively)."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items() if k not in ("example", "examples")}
    if node.pop("nullable", False):
        t = node.get("type")
        if isinstance(t, str) and "allOf" not in node and "$ref" not in node:
            node["type"] = [t, "null"]
            if "enum" in node:
                node["enum"] = [*node["enum"], None]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


class SpecValidator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.components = {"schemas": _nullable(copy.deepcopy(spec["components"]["schemas"]))}

    def validate(self, name: str, instance: Any) -> None:
        import jsonschema

        schema = {"$ref": f"#/components/schemas/{name}", "components": self.components}
        jsonschema.Draft202012Validator(schema).validate(instance)

    def response_schema(self, path: str, method: str, status: int) -> str | None:
        resp = self.spec["paths"][path][method.lower()]["responses"][str(status)]
        content = resp.get("content", {}).get("application/json")
        if not content:
            return None
        return content["schema"]["$ref"].rsplit("/", 1)[-1]

    def check(self, path: str, method: str, response: httpx.Response) -> None:
        """The status is one the spec lists for the operation, the body matches its schema, and
        error bodies carry the X-Request-Id of the response."""
        op = self.spec["paths"][path][method.lower()]
        assert str(response.status_code) in op["responses"], (
            f"{method} {path} answered {response.status_code}, not listed in the spec"
        )
        rid = response.headers.get("x-request-id")
        assert rid, "every response carries X-Request-Id"
        name = self.response_schema(path, method, response.status_code)
        if name:
            body = response.json()
            self.validate(name, body)
            if name == "ErrorEnvelope":
                assert body["error"]["request_id"] == rid
                assert body["error"]["retryable"] == (
                    body["error"]["code"] in ("rate_limited", "capacity_exceeded", "internal_error")
                )


class SlowPut:
    """A part PUT over a raw socket whose body is sent in pieces, when the test says so."""

    def __init__(self, srv, uid: str, n: int, length: int) -> None:
        u = urlsplit(srv.url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        head = (
            f"PUT /v1/uploads/{uid}/parts/{n} HTTP/1.1\r\nHost: {u.netloc}\r\n"
            f"Authorization: Bearer {srv.api_keys[0]}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        self.sock.sendall(head.encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def status(self) -> int:
        reply = b""
        while b"\r\n" not in reply:
            got = self.sock.recv(65536)
            if not got:
                break
            reply += got
        self.sock.close()
        return int(reply.split(b" ", 2)[1])


def wait_for(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def staged_bytes(srv, uid: str, start: int, length: int) -> bytes:
    path = Path(srv.core.store.get_upload(uid)["path"])
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(length)


def read_answer(sock: socket.socket) -> tuple[int, dict, bytes]:
    """Status, JSON body and lower-cased head of the answer on a raw ``sock``, read until the server
    closes it (a reset after the answer ends the read: bytes the client sent after it were not read;
    a server that never answers or never closes fails the read with the socket's timeout). A
    chunked body is taken from its first chunk."""
    reply = b""
    while True:
        try:
            got = sock.recv(65536)
        except ConnectionResetError:
            break
        if not got:
            break
        reply += got
    sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return int(head.split(b" ", 2)[1]), json.loads(body), head.lower()
