"""What every handler uses: the core of the app, JSON answers and bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..core import Core
from ..errors import invalid
from ..util import dumps


def core_of(request: Request) -> Core:
    return request.app.state.core


def ok(body: Any, status: int = 200, headers=None) -> Response:
    return Response(dumps(body).encode(), status_code=status, media_type="application/json", headers=headers)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise invalid("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object")
    return data
