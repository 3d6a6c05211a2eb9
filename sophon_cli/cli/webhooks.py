"""`sophon webhooks create|list|delete|verify|listen`.

The signing secret is shown once, in the response of ``create``; ``--save-secret`` also stores it
(0600) in ``<config dir>/webhook-secrets.toml`` keyed by webhook id, where ``listen`` finds it.
``listen`` is a small threaded stdlib HTTP receiver: it verifies every delivery on the raw body,
answers 2xx for valid (and already-seen) events and 4xx for invalid ones, dedupes on the signed
body's ``event_id``, prints one line per new event and can forward the raw request elsewhere.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from sophon_cli.cli.context import get_ctx
from sophon_cli.client.webhooks import DEFAULT_TOLERANCE, SIGNATURE_HEADER, TIMESTAMP_HEADER

app = typer.Typer(no_args_is_help=True)

SECRET_ENV = "SOPHON_WEBHOOK_SECRET"
SECRETS_FILE = "webhook-secrets.toml"
DEFAULT_PORT = 8765
MAX_BODY = 1024 * 1024

# ---- saved secrets --------------------------------------------------------------------------


def secrets_path() -> Path:
    from sophon_cli.settings import config_dir

    return config_dir() / SECRETS_FILE


def load_saved_secrets(path: Path | None = None) -> dict[str, str]:
    """webhook id -> secret from the secrets file ({} when there is none)."""
    from sophon_cli.settings import read_config

    data = read_config(path or secrets_path())
    hooks = data.get("webhooks", {})
    if not isinstance(hooks, dict):
        return {}
    return {
        wid: str(entry["secret"])
        for wid, entry in hooks.items()
        if isinstance(entry, dict) and entry.get("secret")
    }


def save_secret(webhook_id: str, secret: str, url: str, path: Path | None = None) -> Path:
    import tomli_w

    from sophon_cli.settings import read_config, write_private_file

    path = path or secrets_path()
    data = read_config(path)
    hooks = data.setdefault("webhooks", {})
    hooks[webhook_id] = {"secret": secret, "url": url}
    write_private_file(path, tomli_w.dumps(data).encode())
    return path


def resolve_secrets(secret: str | None) -> list[str]:
    """--secret, else $SOPHON_WEBHOOK_SECRET, else every saved secret."""
    if secret:
        return [secret]
    env = os.environ.get(SECRET_ENV, "").strip()
    if env:
        return [env]
    return list(dict.fromkeys(load_saved_secrets().values()))


def _no_secret_error():
    from sophon_cli.client.errors import InputError

    return InputError(
        "no webhook secret given",
        hint=f"pass --secret, set {SECRET_ENV}, or create the webhook with --save-secret",
    )


# ---- create / list / delete -----------------------------------------------------------------


@app.command("create")
def create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="HTTPS URL that receives the deliveries.")],
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="A label for the webhook.")
    ] = None,
    save_secret_: Annotated[
        bool,
        typer.Option(
            "--save-secret", help="Also store the signing secret (0600) for `sophon webhooks listen`."
        ),
    ] = False,
) -> None:
    """Register a webhook; prints its signing secret (shown only this once)."""
    import uuid

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    hook = app_ctx.client().webhooks.create(url, name=name, idempotency_key=f"sc-webhook-{uuid.uuid4().hex}")
    if save_secret_:
        path = save_secret(hook.id, hook.secret, str(hook.url))
        out.notice(f"saved the signing secret to {path} (mode 0600)")
    else:
        out.notice("the signing secret is shown only this once: store it now (or use --save-secret)")
    if out.json:
        out.emit(hook)
    else:
        rows = [("id", hook.id), ("url", hook.url)]
        if hook.name:
            rows.append(("name", hook.name))
        out.kv([*rows, ("secret", hook.secret)])


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List active webhooks (secrets are never shown)."""
    from sophon_cli.cli.job import short_time
    from sophon_cli.cli.output import to_jsonable

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    hooks = app_ctx.client().webhooks.list()
    if out.json:
        for hook in hooks:
            data = to_jsonable(hook)
            data.pop("secret", None)
            out.emit(data)
        return
    rows = [(h.id, h.url, "yes" if h.active else "no", short_time(h.created_at), h.name or "") for h in hooks]
    out.table(["id", "url", "active", "created", "name"], rows)


@app.command("delete")
def delete(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(metavar="WEBHOOK_ID", help="The webhook id (wh_...).")],
) -> None:
    """Deactivate a webhook: it receives no more deliveries."""
    app_ctx = get_ctx(ctx)
    app_ctx.client().webhooks.delete(webhook_id)
    if app_ctx.out.json:
        app_ctx.out.emit({"id": webhook_id, "deleted": True})
    else:
        app_ctx.out.print(f"{webhook_id}  deleted")


# ---- verify ---------------------------------------------------------------------------------


@app.command("verify")
def verify(
    ctx: typer.Context,
    signature: Annotated[
        str,
        typer.Option("--signature", metavar="HEADER", help=f"The {SIGNATURE_HEADER} value (sha256=<hex>)."),
    ],
    timestamp: Annotated[
        str, typer.Option("--timestamp", metavar="T", help=f"The {TIMESTAMP_HEADER} value.")
    ],
    secret: Annotated[
        str | None,
        typer.Option("--secret", metavar="SECRET", help=f"The webhook's signing secret [env {SECRET_ENV}]."),
    ] = None,
    body_file: Annotated[
        str, typer.Option("--body-file", metavar="FILE|-", help="The raw request body [default: stdin].")
    ] = "-",
    tolerance: Annotated[
        int, typer.Option("--tolerance", metavar="SECONDS", help="Reject timestamps older/newer than this.")
    ] = DEFAULT_TOLERANCE,
) -> None:
    """Check a delivery's signature: exit 0 when valid, 1 with the reason when not."""
    from sophon_cli.client.errors import SignatureError
    from sophon_cli.client.webhooks import verify_signature

    app_ctx = get_ctx(ctx)
    secrets = resolve_secrets(secret)
    if not secrets:
        raise _no_secret_error()
    body = _read_body(body_file)
    error: SignatureError | None = None
    for candidate in secrets:
        try:
            verify_signature(body, signature, timestamp, candidate, tolerance=tolerance)
            error = None
            break
        except SignatureError as exc:
            error = error or exc
    if app_ctx.out.json:
        app_ctx.out.emit({"valid": error is None, "reason": getattr(error, "reason", None)})
    if error is not None:
        raise SignatureError(
            f"invalid signature: {error.message} ({error.reason})", reason=error.reason, hint=error.hint
        )
    if not app_ctx.out.json:
        app_ctx.out.print("valid")


def _read_body(body_file: str) -> bytes:
    from sophon_cli.cli.options import read_option_file

    return read_option_file(body_file, "--body-file", kind="the raw body file")


# ---- listen ---------------------------------------------------------------------------------


class Receiver:
    """The delivery logic of `listen`, independent of the HTTP server around it."""

    def __init__(
        self,
        out: Any,
        secrets: list[str],
        *,
        forward_to: str | None = None,
        max_events: int | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        self.out = out
        self.secrets = secrets
        self.forward_to = forward_to
        self.max_events = max_events
        self.tolerance = tolerance
        self.seen: set[str] = set()
        self.count = 0
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()
        self._forwarder: Any = None

    def handle(self, headers: Any, body: bytes) -> tuple[int, str]:
        """Process one delivery; return (HTTP status, short reason)."""
        import json

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
            self.out.warn(f"rejected a delivery: {error} ({error.reason})")
            return 401, error.reason
        try:
            event = json.loads(body)
            event_id = event["event_id"]
        except (ValueError, KeyError, TypeError):
            self.out.warn("rejected a signed delivery whose body has no event_id")
            return 400, "no event_id"
        with self._lock:
            if event_id in self.seen:
                self.out.debug(f"duplicate delivery of {event_id} acknowledged")
                return 200, "duplicate"
            # claim it while forwarding so a concurrent retry is not forwarded twice
            self.seen.add(event_id)
        if self.forward_to:
            ok, detail = self.forward(headers, body)
            if not ok:
                with self._lock:
                    self.seen.discard(event_id)
                self.out.warn(
                    f"forwarding {event_id} to {self.forward_to} failed ({detail}); the sender will retry"
                )
                return 502, "forward failed"
        self.print_event(event)
        with self._lock:
            self.count += 1
        return 200, "ok"

    def check_done(self) -> None:
        """Called after a response went out, so the last sender still gets its answer."""
        with self._lock:
            if self.max_events is not None and self.count >= self.max_events:
                self.finished.set()

    def print_event(self, event: dict[str, Any]) -> None:
        with self._print_lock:
            if self.out.json:
                self.out.emit(event)
            else:
                fields = [event.get(k) for k in ("timestamp", "type", "job_id", "status", "event_id")]
                self.out.print("  ".join(str(f) for f in fields if f is not None))

    def forward(self, headers: Any, body: bytes) -> tuple[bool, str]:
        import httpx

        with self._lock:
            if self._forwarder is None:
                self._forwarder = httpx.Client(timeout=10.0, follow_redirects=False)
            client = self._forwarder
        fwd = {k: v for k, v in headers.items() if k.lower().startswith("x-turbo-")}
        fwd["Content-Type"] = headers.get("Content-Type") or "application/json"
        try:
            response = client.post(self.forward_to, content=body, headers=fwd)
        except httpx.HTTPError as exc:
            return False, type(exc).__name__
        if 200 <= response.status_code < 300:
            self.out.debug(f"forwarded to {self.forward_to}: HTTP {response.status_code}")
            return True, str(response.status_code)
        return False, f"HTTP {response.status_code}"

    def close(self) -> None:
        if self._forwarder is not None:
            self._forwarder.close()


def make_http_server(receiver: Receiver, host: str, port: int):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        server_version = "sophon-webhooks-listen"
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._answer(413 if length > MAX_BODY else 400, "bad content length")
                return
            body = self.rfile.read(length)
            status, reason = receiver.handle(self.headers, body)
            self._answer(status, reason)
            receiver.check_done()

        def do_GET(self) -> None:  # noqa: N802
            self._answer(405, "POST webhook deliveries here")

        def _answer(self, status: int, text: str) -> None:
            data = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            receiver.out.debug("listen: " + (format % args))

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    return Server((host, port), Handler)


@app.command("listen")
def listen(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="Port to listen on (0 = any free port).")
    ] = (DEFAULT_PORT),
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret", metavar="SECRET", help=f"Signing secret [env {SECRET_ENV}; else saved secrets]."
        ),
    ] = None,
    forward_to: Annotated[
        str | None,
        typer.Option("--forward-to", metavar="URL", help="Also POST each new delivery here, as received."),
    ] = None,
    max_events: Annotated[
        int | None, typer.Option("--max-events", metavar="N", help="Exit after N new events.")
    ] = None,
    tolerance: Annotated[
        int, typer.Option("--tolerance", metavar="SECONDS", help="Reject timestamps older/newer than this.")
    ] = DEFAULT_TOLERANCE,
) -> None:
    """Receive deliveries locally: verify, dedupe, print one line per new event (NDJSON with --json)."""
    from sophon_cli.client.errors import InputError

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    secrets = resolve_secrets(secret)
    if not secrets:
        raise _no_secret_error()
    if max_events is not None and max_events < 1:
        raise InputError(f"--max-events must be at least 1 (got {max_events})", hint="e.g. --max-events 1")
    if forward_to is not None and not forward_to.startswith(("http://", "https://")):
        raise InputError(
            f"--forward-to must be an http:// or https:// URL (got {forward_to!r})",
            hint="e.g. --forward-to http://127.0.0.1:3000/hooks",
        )
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be 0-65535 (got {port})", hint="e.g. --port 8765")
    receiver = Receiver(out, secrets, forward_to=forward_to, max_events=max_events, tolerance=tolerance)
    try:
        server = make_http_server(receiver, host, port)
    except OSError as exc:
        raise InputError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port (0 = any free port)",
        ) from None
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    out.stderr.write(f"listening on http://{shown}:{bound_port}/ (Ctrl-C to stop)\n")
    out.stderr.flush()
    if forward_to:
        out.notice(f"forwarding new deliveries to {forward_to}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        while not receiver.finished.wait(0.5):
            pass
    except KeyboardInterrupt:
        out.notice("stopped")
    finally:
        server.shutdown()
        server.server_close()
        receiver.close()
