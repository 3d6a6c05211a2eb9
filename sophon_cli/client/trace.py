"""What the client tells an observer about each HTTP exchange (the CLI's ``-v``/``-vv`` lines).

:class:`HttpEvent` is one finished attempt: method, a redacted path, the status (None when no
response came), the server's request id, the time from sending to the last byte, the attempt number,
and — for observers that want them — the request and response headers with every credential
replaced by ``***`` (:func:`redact_headers`). Nothing in an event holds the API key or a download
token. Pure: no httpx, no CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sophon_cli.client.text import redact, safe_field

#: header names whose value is a credential, shown as ``***``
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-sophon-signature"}
)

Headers = tuple[tuple[str, str], ...]


def redact_headers(headers: Iterable[tuple[str, str]], secrets: Iterable[str] = ()) -> Headers:
    """``headers`` as (name, value) pairs safe to print: credentials masked (keeping the auth
    scheme, e.g. ``Bearer ***``), download tokens and known secrets redacted from every other value."""
    shown: list[tuple[str, str]] = []
    secrets = tuple(secrets)
    for name, value in headers:
        low = name.lower()
        if low in SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value and low.endswith("authorization") else ""
            value = f"{scheme} ***" if scheme else "***"
        else:
            value = safe_field(value, secrets, 500)
        shown.append((safe_field(name, (), 100), value))
    return tuple(shown)


@dataclass(frozen=True)
class HttpEvent:
    method: str
    path: str  # redacted; prefixed with the host when it is not the API's
    status: int | None
    elapsed: float
    attempt: int = 1
    request_id: str | None = None
    error: str | None = None  # the failure's kind when no usable response came (e.g. "ConnectError")
    request_headers: Headers = ()
    response_headers: Headers = ()


HttpObserver = Callable[[HttpEvent], None]


def shown_path(url_path: str, query: str = "", host: str | None = None) -> str:
    """A request target safe to print: tokens and signed-URL secrets redacted."""
    target = url_path + (f"?{query}" if query else "")
    if host:
        target = host + target
    return redact(target)


__all__ = ["SECRET_HEADERS", "HttpEvent", "HttpObserver", "redact_headers", "shown_path"]
