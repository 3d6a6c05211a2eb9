"""What every handler uses: the core of the app, JSON answers and bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import jsonbody
from ..core import Core
from ..errors import invalid
from ..util import dumps


def core_of(request: Request) -> Core:
    return request.app.state.core


def ok(body: Any, status: int = 200, headers=None) -> Response:
    return Response(dumps(body).encode(), status_code=status, media_type="application/json", headers=headers)


def as_int(value: Any) -> int | None:
    """``value`` as an integer the way JSON Schema counts them (``114`` and ``114.0`` are both the
    integer 114; ``true`` and ``114.5`` are not), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


async def json_body(request: Request) -> dict[str, Any]:
    raw = await jsonbody.read(request)
    try:
        # NaN, Infinity and -Infinity are not JSON: refused, so they can never be echoed back
        data = json.loads(raw or b"null", parse_constant=_no_constant)
    except ValueError as exc:
        detail = f": {exc}" if str(exc).endswith("is not JSON") else ""
        raise invalid(f"the request body is not valid JSON{detail}") from None
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object")
    try:  # every string of a body is Unicode text: "\\ud800" (a lone surrogate) is not, anywhere in it
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("the request body contains text that is not valid Unicode (a lone surrogate)") from None
    return data
