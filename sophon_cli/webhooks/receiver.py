"""A local webhook receiver: verify every delivery, dedupe on ``event_id``, optionally forward.

:class:`Receiver` is the delivery logic (no sockets, no printing): it verifies the raw body under
any of its secrets, answers 2xx for a valid (or already-seen) event and 4xx for an invalid one,
claims each ``event_id`` once (a concurrent retry is not forwarded twice) and reports what
happened through callbacks. :class:`ListenServer` puts it behind a small threaded stdlib HTTP
server. Neither knows about the command line.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sophon_cli.client.webhooks import DEFAULT_TOLERANCE, SIGNATURE_HEADER, TIMESTAMP_HEADER

#: the default port of a receiver: not the local server's 8765, so both run side by side
DEFAULT_PORT = 8766
MAX_BODY = 1024 * 1024
FORWARD_TIMEOUT = 10.0


class Answer(NamedTuple):
    """The HTTP answer to one delivery."""

    status: int
    reason: str


def _ignore(_msg: str) -> None:
    pass


class Receiver:
    """``on_event(event)`` for each new verified event; ``on_warning`` / ``on_debug`` take one line."""

    def __init__(
        self,
        secrets: list[str],
        *,
        forward_to: str | None = None,
        max_events: int | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_warning: Callable[[str], None] = _ignore,
        on_debug: Callable[[str], None] = _ignore,
    ) -> None:
        self.secrets = list(secrets)
        self.forward_to = forward_to
        self.max_events = max_events
        self.tolerance = tolerance
        self.on_event = on_event or (lambda _event: None)
        self.on_warning = on_warning
        self.on_debug = on_debug
        self.seen: set[str] = set()
        self.count = 0
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._event_lock = threading.Lock()
        self._forwarder: Any = None

    def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """Process one delivery."""
        from sophon_cli.client.errors import SignatureError
        from sophon_cli.client.webhooks import verify_signature

        signature = headers.get(SIGNATURE_HEADER) or ""
        timestamp = headers.get(TIMESTAMP_HEADER) or ""
        error: SignatureError | None = None
        for secret in self.secrets:
            try:
                verify_signature(body, signature, timestamp, secret, tolerance=self.tolerance)
                error = None
                break
            except SignatureError as exc:
                error = error or exc
        if error is not None:
            self.on_warning(f"rejected a delivery: {error} ({error.reason})")
            return Answer(401, error.reason)
        try:
            event = json.loads(body)
            event_id = event["event_id"]
        except (ValueError, KeyError, TypeError):
            self.on_warning("rejected a signed delivery whose body has no event_id")
            return Answer(400, "no event_id")
        with self._lock:
            if event_id in self.seen:
                self.on_debug(f"duplicate delivery of {event_id} acknowledged")
                return Answer(200, "duplicate")
            self.seen.add(event_id)  # claimed while forwarding: a concurrent retry is not forwarded twice
        if self.forward_to:
            ok, detail = self.forward(headers, body)
            if not ok:
                with self._lock:
                    self.seen.discard(event_id)
                self.on_warning(
                    f"forwarding {event_id} to {self.forward_to} failed ({detail}); the sender will retry"
                )
                return Answer(502, "forward failed")
        with self._event_lock:
            self.on_event(event)
        with self._lock:
            self.count += 1
        return Answer(200, "ok")

    def check_done(self) -> None:
        """Called after a response went out, so the last sender still gets its answer."""
        with self._lock:
            if self.max_events is not None and self.count >= self.max_events:
                self.finished.set()

    def forward(self, headers: Mapping[str, str], body: bytes) -> tuple[bool, str]:
        import httpx

        with self._lock:
            if self._forwarder is None:
                self._forwarder = httpx.Client(timeout=FORWARD_TIMEOUT, follow_redirects=False)
            client = self._forwarder
        fwd = {k: v for k, v in headers.items() if k.lower().startswith("x-turbo-")}
        fwd["Content-Type"] = headers.get("Content-Type") or "application/json"
        try:
            response = client.post(self.forward_to, content=body, headers=fwd)
        except httpx.HTTPError as exc:
            return False, type(exc).__name__
        if 200 <= response.status_code < 300:
            self.on_debug(f"forwarded to {self.forward_to}: HTTP {response.status_code}")
            return True, str(response.status_code)
        return False, f"HTTP {response.status_code}"

    def close(self) -> None:
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None


class ListenServer:
    """``receiver`` behind a threaded HTTP server on ``host:port`` (bound at construction:
    OSError when the address is taken). ``start()``, ``url``, ``wait(timeout)``, ``stop()``."""

    def __init__(self, receiver: Receiver, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.receiver = receiver
        self._httpd = _make_http_server(receiver, host, port)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> ListenServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """True once the receiver has seen its ``max_events``."""
        return self.receiver.finished.wait(timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread = None
        self._httpd.server_close()
        self.receiver.close()

    def __enter__(self) -> ListenServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _make_http_server(receiver: Receiver, host: str, port: int):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        server_version = "sophon-webhooks-listen"
        protocol_version = "HTTP/1.1"
        timeout = 30  # a sender that stalls mid-request does not hold a thread forever

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._answer(Answer(413 if length > MAX_BODY else 400, "bad content length"))
                return
            body = self.rfile.read(length)
            self._answer(receiver.handle(self.headers, body))
            receiver.check_done()

        def do_GET(self) -> None:  # noqa: N802
            self._answer(Answer(405, "POST webhook deliveries here"))

        def _answer(self, answer: Answer) -> None:
            data = (answer.reason + "\n").encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            receiver.on_debug("listen: " + (format % args))

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    return Server((host, port), Handler)
