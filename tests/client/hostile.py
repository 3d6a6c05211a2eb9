"""A small real HTTP server on 127.0.0.1 for hostile-server cases (what the local server never does).

``HostileServer(routes)`` maps a request path (query dropped) to a function ``fn(handler)`` that
answers with the helpers below, or writes raw bytes to ``handler.wfile`` for malformed replies.
``FakeAPI`` serves one job and its download (``/v1/jobs/{id}``, ``/v1/jobs/{id}/output`` 302,
``/v1/downloads/tok``) with a configurable body, for download cases.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def send_json(h: BaseHTTPRequestHandler, status: int, body: object, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def send_raw(h: BaseHTTPRequestHandler, raw: bytes) -> None:
    """Write ``raw`` (status line, headers and body) as is and close the connection."""
    h.close_connection = True
    h.wfile.flush()
    h.wfile.write(raw)
    h.wfile.flush()


def trickle(body: bytes, every: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """A route answering 200 with ``body`` one byte at a time, ``every`` seconds apart."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        for i in range(len(body)):
            h.wfile.write(body[i : i + 1])
            h.wfile.flush()
            time.sleep(every)

    return route


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive), no request log, and a redirect helper: the base of every test origin."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Serving:
    """Serves a handler class on 127.0.0.1 (a free port) in a daemon thread: ``url``, ``close()``."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class HostileServer:
    def __init__(self, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class Handler(QuietHandler):
            def _any(self) -> None:
                path = self.path.split("?")[0]
                outer.requests.append((self.command, path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                fn = outer.routes.get(path) or outer.routes.get("*")
                if fn is None:
                    send_json(self, 404, {"error": {"code": "not_found", "message": "no such route"}})
                    return
                try:
                    fn(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def job_doc(job_id: str, *, size: int | None, sha256: str | None, status: str = "completed") -> dict:
    return {
        "id": job_id,
        "status": status,
        "output": {"state": "available", "container": "mp4", "bytes": size, "sha256": sha256},
        "final_artifact": "encoded",
    }


class FakeAPI(HostileServer):
    """One job ``job_1`` whose output download serves ``body`` (``chunk`` bytes every ``delay`` s)."""

    def __init__(
        self,
        body: bytes,
        *,
        size: int | None,
        sha256: str | None,
        chunk: int = 64 * 1024,
        delay: float = 0.0,
        content_length: bool = True,
    ) -> None:
        self.body = body
        self.chunk = chunk
        self.delay = delay
        self.downloads = 0
        self.ranges: list[int] = []
        job = job_doc("job_1", size=size, sha256=sha256)

        def get_job(h):
            send_json(h, 200, job)

        def output(h):
            h.send_response(302)
            h.send_header("Location", "/v1/downloads/tok")
            h.send_header("Content-Length", "0")
            h.end_headers()

        def download(h):
            self.downloads += 1
            start = 0
            rng = h.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                self.ranges.append(start)
                h.send_response(206)
                h.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
            else:
                h.send_response(200)
            h.send_header("Content-Type", "video/mp4")
            h.send_header("Content-Disposition", 'attachment; filename="out.mp4"')
            if content_length:
                h.send_header("Content-Length", str(len(self.body) - start))
            else:
                h.close_connection = True
            h.end_headers()
            for i in range(start, len(self.body), self.chunk):
                h.wfile.write(self.body[i : i + self.chunk])
                h.wfile.flush()
                if self.delay:
                    time.sleep(self.delay)

        super().__init__(
            {"/v1/jobs/job_1": get_job, "/v1/jobs/job_1/output": output, "/v1/downloads/tok": download}
        )
