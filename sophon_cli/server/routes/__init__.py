"""The one route table of the local server: :data:`ROUTES` feeds Starlette (:func:`starlette_routes`)
and the request log / metrics labels (:func:`route_template`).

Handlers live by resource: :mod:`.uploads`, :mod:`.jobs` (jobs, output, downloads),
:mod:`.webhooks`, :mod:`.health`. Paths in :data:`PUBLIC` need no API key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import health, jobs, uploads, webhooks


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Callable[..., Awaitable]
    public: bool = False  # no API key needed


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/v1/jobs", jobs.list_jobs),
    RouteSpec("POST", "/v1/jobs", jobs.create_job),
    RouteSpec("GET", "/v1/jobs/{id}", jobs.get_job),
    RouteSpec("DELETE", "/v1/jobs/{id}", jobs.cancel_job),
    RouteSpec("GET", "/v1/jobs/{id}/output", jobs.job_output),
    RouteSpec("POST", "/v1/uploads", uploads.create_upload),
    RouteSpec("GET", "/v1/uploads/{id}", uploads.get_upload),
    RouteSpec("DELETE", "/v1/uploads/{id}", uploads.cancel_upload),
    RouteSpec("PUT", "/v1/uploads/{id}/parts/{part_number}", uploads.put_part),
    RouteSpec("POST", "/v1/uploads/{id}/complete", uploads.complete_upload),
    RouteSpec("GET", "/v1/webhooks", webhooks.list_webhooks),
    RouteSpec("POST", "/v1/webhooks", webhooks.create_webhook),
    RouteSpec("DELETE", "/v1/webhooks/{id}", webhooks.delete_webhook),
    RouteSpec("GET", "/v1/downloads/{token}", jobs.download, public=True),  # the token is the credential
    RouteSpec("GET", "/healthz", health.healthz, public=True),
    RouteSpec("GET", "/readyz", health.readyz, public=True),
    RouteSpec("GET", "/metrics", health.metrics, public=True),
)


def _match(method: str, path: str) -> RouteSpec | None:
    segs = path.rstrip("/").split("/") if path != "/" else [""]
    m = "GET" if method == "HEAD" else method
    for spec in ROUTES:
        tsegs = spec.path.split("/")
        if spec.method == m and len(tsegs) == len(segs):
            if all(t.startswith("{") or t == s for t, s in zip(tsegs, segs, strict=True)):
                return spec
    return None


def route_template(method: str, path: str) -> str:
    """``PUT /v1/uploads/upl_1/parts/3`` -> ``PUT /v1/uploads/{id}/parts/{part_number}``."""
    spec = _match(method, path)
    return f"{method} {spec.path}" if spec else f"{method} <unmatched>"


def is_public(path: str) -> bool:
    """No API key is needed on ``path`` (any method: a wrong method still gets its 405)."""
    for spec in ROUTES:
        if spec.public:
            prefix = spec.path.split("{", 1)[0]
            if path == spec.path or (prefix != spec.path and path.startswith(prefix)):
                return True
    return False


def starlette_routes() -> list:
    from starlette.routing import Route

    return [Route(spec.path, spec.handler, methods=[spec.method]) for spec in ROUTES]
