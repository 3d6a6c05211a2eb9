"""``/healthz``, ``/readyz`` and ``/metrics`` (public: no API key)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from .common import core_of, ok
from .uploads import DISK_RESERVE, free_bytes


async def healthz(request: Request) -> Response:
    return ok({"status": "ok"})


async def readyz(request: Request) -> Response:
    core = core_of(request)
    failed = []
    if not core.store.ping():
        failed.append("database")
    try:
        if free_bytes(core) < DISK_RESERVE:
            failed.append("disk_critical")
    except OSError:
        failed.append("disk_critical")
    if not (core.workers.alive() and core.delivery.alive()):
        failed.append("workers_dead")
    return ok({"ready": not failed, "checks_failed": failed}, 200 if not failed else 503)


async def metrics(request: Request) -> Response:
    core = core_of(request)
    lines = []
    seen = set()
    for (name, labels), value in sorted(core.metrics.snapshot().items()):
        if name not in seen:
            lines.append(f"# TYPE {name} counter")
            seen.add(name)
        lab = ",".join(f'{k}="{v}"' for k, v in labels)
        lines.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")
    lines.append("# TYPE sophon_jobs gauge")
    for status, count in core.store.job_counts():
        lines.append(f'sophon_jobs{{status="{status}"}} {count}')
    lines.append("# TYPE sophon_webhook_deliveries gauge")
    for state, count in core.store.delivery_counts():
        lines.append(f'sophon_webhook_deliveries{{state="{state}"}} {count}')
    lines.append("# TYPE sophon_workers_busy gauge")
    lines.append(f"sophon_workers_busy {core.workers.busy}")
    lines.append("# TYPE sophon_uptime_seconds gauge")
    lines.append(f"sophon_uptime_seconds {time.time() - core.started_at:.3f}")
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
