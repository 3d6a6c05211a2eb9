"""`sophon health`: liveness, readiness and an authenticated call, one line each.

Exit 0 when all pass, 1 when the server is not ready, 4 when the key is missing or rejected,
8 when the server cannot be reached.
"""

from __future__ import annotations

from typing import Any

import typer

from sophon_cli.cli.context import get_ctx


def check_auth(app_ctx: Any) -> tuple[str, Any]:
    """("ok" | "missing" | "rejected", the error or None) after one cheap authenticated call."""
    from sophon_cli.client.errors import AuthError, ConfigError

    try:
        app_ctx.endpoint(need_key=True)
    except ConfigError as exc:
        return "missing", exc
    try:
        app_ctx.client().jobs.list(limit=1)
    except AuthError as exc:
        return "rejected", exc
    return "ok", None


def health_command(ctx: typer.Context) -> None:
    """Check that the server is alive, ready, and accepts your key."""
    from sophon_cli.cli.verbose import attach
    from sophon_cli.client.http import SophonClient, display_url

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    base, _ = app_ctx.endpoint(need_key=False)
    url = display_url(base)
    # liveness/readiness need no key; a short-lived client without retries answers fast
    with SophonClient(
        base, None, timeout=app_ctx.settings.timeout, max_retries=2, retry_budget=10.0
    ) as probe:
        attach(probe, out, int(app_ctx.options.verbose))  # -v lines and retry notices, as for every client
        alive = probe.healthz()
        ready = probe.readyz() if alive else None
    is_ready = bool(ready is not None and ready.ready)
    failed = list(getattr(ready, "checks_failed", None) or [])
    auth, auth_error = check_auth(app_ctx) if alive else ("unknown", None)
    if out.json:
        out.emit(
            {
                "base_url": url,
                "alive": alive,
                "ready": is_ready,
                "checks_failed": failed,
                "auth": auth,
            }
        )
    else:
        from sophon_cli.client.text import safe_field

        ready_text = "ready" if is_ready else "not ready" + (f" ({', '.join(failed)})" if failed else "")
        lines = [
            ("healthz", "ok" if alive else "failing", url),
            ("readyz", safe_field(ready_text)),
            ("auth", auth),
        ]
        for name, *values in lines:  # aligned on a terminal, tab-separated when piped
            out.print(f"{name:<8} " + "  ".join(values) if out.is_tty else "\t".join([name, *values]))
    if auth_error is not None:
        raise auth_error
    if not alive or not is_ready:
        from sophon_cli.client.errors import SophonError

        why = f": {', '.join(failed)}" if failed else ""
        raise SophonError(f"the server at {url} is not ready{why}", hint="try again in a moment")
