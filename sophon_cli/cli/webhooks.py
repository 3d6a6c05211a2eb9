"""`sophon webhooks create|list|delete|verify|listen`: parse, call the library, render.

The signing secret is shown once, in the response of ``create``; ``--save-secret`` also stores it
(0600) in ``<config dir>/webhook-secrets.toml`` (``sophon_cli.webhooks.secret_store``), where
``listen`` finds it. The store is checked before the webhook is created, and a secret that cannot
be saved after all is printed to stdout (once) with an error. ``listen`` runs
``sophon_cli.webhooks.receiver``: verify, dedupe on ``event_id``, print one line per new event.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from sophon_cli.cli.context import get_ctx
from sophon_cli.cli.prompts import YesOpt
from sophon_cli.client.webhooks import DEFAULT_TOLERANCE, SIGNATURE_HEADER, TIMESTAMP_HEADER
from sophon_cli.webhooks.receiver import DEFAULT_PORT
from sophon_cli.webhooks.secret_store import SECRET_ENV

app = typer.Typer(no_args_is_help=True)

#: ``--tolerance`` of ``verify`` and ``listen``: one declaration (a negative value would refuse
#: every delivery, so it is a usage error)
ToleranceOpt = Annotated[
    int,
    typer.Option("--tolerance", metavar="SECONDS", min=0, help="Reject timestamps older/newer than this."),
]


def _no_secret_error():
    from sophon_cli.client.errors import InputError

    return InputError(
        "no webhook secret given",
        hint=f"pass --secret, set {SECRET_ENV}, or create the webhook with --save-secret",
    )


def _secrets(secret: str | None) -> list[str]:
    from sophon_cli.webhooks.secret_store import resolve_secrets

    return resolve_secrets(secret)


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

    from sophon_cli.client.errors import BadRequestError
    from sophon_cli.webhooks.secret_store import SecretStore, SecretStoreError

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    store = SecretStore()
    if save_secret_:
        store.check_writable()  # before the server makes a secret it will never show again
    try:
        hook = app_ctx.client().webhooks.create(
            url, name=name, idempotency_key=f"sc-webhook-{uuid.uuid4().hex}"
        )
    except BadRequestError as exc:
        if url.lower().startswith("http://"):
            from sophon_cli.cli.hints import INSECURE_WEBHOOK_URL

            exc.hint = INSECURE_WEBHOOK_URL
        raise
    save_error: SecretStoreError | None = None
    if save_secret_ or name:
        try:
            path = store.save(
                hook.id, url=str(hook.url), secret=hook.secret if save_secret_ else None, name=name
            )
            if save_secret_:
                out.notice(f"saved the signing secret to {path} (mode 0600)")
        except SecretStoreError as exc:
            if save_secret_:
                save_error = exc
            else:  # only the name was to be kept: the server has everything else
                out.warn(f"could not record the webhook's name locally: {exc}")
    if not save_secret_:
        out.notice("the signing secret is shown only this once: store it now (or use --save-secret)")
    _show_created(out, hook, name)
    if save_error is not None:
        from sophon_cli.client.errors import SophonError

        raise SophonError(
            f"the webhook {hook.id} was created but its signing secret could not be saved ({save_error})",
            hint="the secret is printed above, only this once: store it now",
        )


def _show_created(out: Any, hook: Any, name: str | None) -> None:
    from sophon_cli.client.text import safe_field

    if out.json:
        out.emit(hook)
        return
    rows = [("id", safe_field(hook.id)), ("url", safe_field(hook.url))]
    shown_name = hook.name or name
    if shown_name:
        rows.append(("name", safe_field(shown_name)))
    out.kv([*rows, ("secret", safe_field(hook.secret))])


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List active webhooks (secrets are never shown)."""
    from sophon_cli.cli.output import to_jsonable
    from sophon_cli.client.text import safe_field
    from sophon_cli.webhooks.secret_store import SecretStore, SecretStoreError

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    hooks = app_ctx.client().webhooks.list()
    try:  # the spec's list reply has no name: show the one recorded at creation
        names = SecretStore().names()
    except SecretStoreError as exc:
        out.warn(f"webhook names not shown: {exc}")
        names = {}
    if out.json:
        out.emit_list(_listed(to_jsonable(hook), names) for hook in hooks)
        return
    rows = [
        (
            safe_field(h.id),
            safe_field(h.url),
            "yes" if h.active else "no",
            out.when(h.created_at),
            safe_field(h.name or names.get(h.id) or ""),
        )
        for h in hooks
    ]
    if not rows:  # as `job list` says "no jobs": on a terminal no empty table; piped the header stays
        out.notice("no webhooks; create one with `sophon webhooks create URL`")
        if out.is_tty:
            return
    out.table(["id", "url", "active", "created", "name"], rows)


def _listed(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A webhook as `webhooks list --json` prints it: no secret, the name recorded at creation."""
    data.pop("secret", None)
    if not data.get("name") and data.get("id") in names:
        data["name"] = names[data["id"]]
    return data


@app.command("delete")
def delete(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(metavar="WEBHOOK_ID", help="The webhook id (wh_...).")],
    yes: YesOpt = False,
) -> None:
    """Deactivate a webhook: it receives no more deliveries (asks first on a terminal)."""
    from sophon_cli.cli.prompts import confirm
    from sophon_cli.client.text import safe_field

    app_ctx = get_ctx(ctx)
    client = app_ctx.client()
    confirm(f"Delete webhook {safe_field(webhook_id)}? It receives no more deliveries.", yes=yes)
    client.webhooks.delete(webhook_id)
    if app_ctx.out.json:
        app_ctx.out.emit({"id": webhook_id, "deleted": True})
    else:
        app_ctx.out.print(f"{safe_field(webhook_id)}\tdeleted")


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
        str | None,
        typer.Option(
            "--body-file",
            metavar="FILE|-",
            help="The raw request body [default: stdin] (piped; - reads stdin even on a terminal).",
        ),
    ] = None,
    tolerance: ToleranceOpt = DEFAULT_TOLERANCE,
) -> None:
    """Check a delivery's signature: exit 0 when valid, 1 with the reason when not."""
    from sophon_cli.client.errors import InputError, SignatureError
    from sophon_cli.client.webhooks import verify_signature

    app_ctx = get_ctx(ctx)
    secrets = _secrets(secret)
    if not secrets:
        raise _no_secret_error()
    if body_file is None and sys.stdin is not None and sys.stdin.isatty():
        # it would wait for the body to be typed, silently: a raw body is a file or a pipe
        raise InputError(
            "no request body: --body-file is not given and standard input is a terminal",
            hint="pass --body-file FILE, or pipe the raw body in (`sophon webhooks verify ... < body.json`)",
        )
    body = _read_body(body_file or "-")
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


@app.command("listen")
def listen(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port",
            metavar="PORT",
            help="Port to listen on (0 = any free port; the local server uses 8765).",
        ),
    ] = DEFAULT_PORT,
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
    tolerance: ToleranceOpt = DEFAULT_TOLERANCE,
) -> None:
    """Receive deliveries locally: verify, dedupe, print one line per new event (NDJSON with --json)."""
    from sophon_cli.client.errors import InputError
    from sophon_cli.webhooks.receiver import ListenServer, Receiver

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    secrets = _secrets(secret)
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
        raise InputError(f"--port must be 0-65535 (got {port})", hint=f"e.g. --port {DEFAULT_PORT}")
    receiver = Receiver(
        secrets,
        forward_to=forward_to,
        max_events=max_events,
        tolerance=tolerance,
        on_event=lambda event: _print_event(out, event),
        on_warning=out.warn,
        on_debug=out.debug,
    )
    try:
        server = ListenServer(receiver, host, port)
    except OSError as exc:
        raise InputError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port (0 = any free port)",
        ) from None
    try:  # a Ctrl-C as early as this is the same stop
        out.stderr.write(f"listening on {server.url} (Ctrl-C to stop)\n")
        out.stderr.flush()
        if forward_to:
            out.notice(f"forwarding new deliveries to {forward_to}")
        server.start()
        while not server.wait(0.5):
            pass
    except KeyboardInterrupt:
        if not out.quiet:
            from sophon_cli.cli.output import interrupt_line

            interrupt_line("stopped")
    finally:
        server.stop()


def _print_event(out: Any, event: dict[str, Any]) -> None:
    """One verified event: the body as one JSON line with --json, else its main fields (tabs when piped)."""
    from sophon_cli.client.text import safe_field

    if out.json:
        out.emit(event)
        return
    fields = [event.get(k) for k in ("timestamp", "type", "job_id", "status", "event_id")]
    sep = "  " if out.is_tty else "\t"
    out.print(sep.join(safe_field(f) for f in fields if f is not None))
