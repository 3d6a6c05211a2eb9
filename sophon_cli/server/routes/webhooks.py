"""``/v1/webhooks``: register, list and deactivate webhook endpoints."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError, Code, invalid
from ..idempotency import idempotent
from ..util import iso, new_id, now
from .common import core_of, json_body, ok


def check_webhook_url(url: Any, allow_insecure: bool) -> str:
    if not isinstance(url, str) or not url:
        raise invalid("url must be an https URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise invalid("url is not a valid URL") from None
    allowed = ("https", "http") if allow_insecure else ("https",)
    if parts.scheme not in allowed:
        raise invalid("url must use https")
    if not host:
        raise invalid("url has no host")
    if parts.username or parts.password:
        raise invalid("url must not contain user info")
    if allow_insecure:
        return url
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        raise invalid("url must not point to a local host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return url
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    ):
        raise invalid("url must not point to a private, loopback or link-local address")
    return url


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
