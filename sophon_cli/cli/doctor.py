"""`sophon doctor`: one line per check (ok / warn / fail, with the next step), exit 0 when nothing
failed, 1 otherwise. The checks live in ``sophon_cli.diagnose``; this module only renders them.

On a terminal the lines are aligned (statuses coloured); piped they are tab-separated
``STATUS NAME DETAIL HINT``; ``--json`` prints one object ``{"ok": bool, "checks": [...]}``.
"""

from __future__ import annotations

import typer

from sophon_cli.cli.context import get_ctx

_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}


def doctor_command(ctx: typer.Context) -> None:
    """Check the setup: config, API key, server reachable and ready, clock, ffmpeg, state dir.

    Examples:

      sophon doctor

      sophon --json doctor | jq '.checks[] | select(.status != "ok")'
    """
    from sophon_cli import diagnose
    from sophon_cli.cli.hints import DOCTOR_FIXES
    from sophon_cli.client.text import safe_field

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    opts = app_ctx.options
    report = diagnose.run(base_url=opts.base_url, profile=opts.profile, local=opts.local)
    rows = [
        (
            check.status.value,
            check.name,
            safe_field(check.detail, limit=240),
            DOCTOR_FIXES.get(check.fix.value, "") if check.fix is not None else "",
        )
        for check in report.checks
    ]
    if out.json:
        out.emit(
            {
                "ok": report.ok,
                "checks": [{"name": n, "status": s, "detail": d, "hint": h or None} for s, n, d, h in rows],
            }
        )
    elif out.is_tty:
        width = max(len(n) for _, n, _, _ in rows)
        for status, name, detail, hint in rows:
            text = f"{detail}; {hint}" if hint else detail
            label = f"{status:<4}"
            if out.color:
                from rich.markup import escape

                line = f"[{_COLOURS[status]}]{label}[/]  {name:<{width}}  {escape(text)}"
                out.console.print(line, soft_wrap=True)  # the terminal wraps: nothing cut
            else:
                out.print(f"{label}  {name:<{width}}  {text}")
    else:
        for row in rows:
            out.print("\t".join(row))
    failed = len(report.failed)
    warned = sum(1 for s, *_ in rows if s == "warn")
    if not out.json:
        if failed:
            out.notice(f"{failed} check{'s' if failed != 1 else ''} failed")
        elif warned:
            out.notice(f"no check failed ({warned} warning{'s' if warned != 1 else ''})")
    if failed:
        raise typer.Exit(1)
