"""``/v1/webhooks``: register, list and deactivate webhook endpoints."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError, Code, invalid
from ..idempotency import idempotent
from ..netcheck import UrlRefused, check_url
from ..util import iso, new_id, now
from .common import core_of, json_body, ok


def check_webhook_url(url: Any, allow_insecure: bool) -> str:
    try:
        return check_url(url, allow_insecure=allow_insecure)
    except UrlRefused as exc:
        raise invalid(str(exc)) from None


@idempotent
async def create_webhook(request: Request) -> Response:
    core = core_of(request)
    data = await json_body(request)
    url = check_webhook_url(data.get("url"), core.config.allow_insecure_webhooks)
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise invalid("name must be a string")
    wid = new_id("wh")
    secret = secrets.token_hex(32)
    t = now()
    core.store.insert_webhook(id=wid, url=url, name=name, secret=secret, created_at=t)
    return ok({"id": wid, "url": url, "secret": secret, "active": True, "created_at": iso(t)}, 201)


async def list_webhooks(request: Request) -> Response:
    core = core_of(request)
    return ok(
        {
            "webhooks": [
                {
                    "id": r["id"],
                    "url": r["url"],
                    "active": bool(r["active"]),
                    "created_at": iso(r["created_at"]),
                }
                for r in core.store.active_webhooks()
            ]
        }
    )


async def delete_webhook(request: Request) -> Response:
    core = core_of(request)
    wid = request.path_params["id"]
    if not core.store.deactivate_webhook(wid):
        raise ApiError(404, Code.NOT_FOUND, f"webhook {wid} not found or already inactive")
    return Response(status_code=204)
