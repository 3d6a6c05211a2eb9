"""Network failures -> the typed TransportError a caller is shown once the retries are over.

What the failure was decides the error and its :class:`~sophon_cli.client.errors.NextStep`:

* a host name that does not resolve: :class:`NameResolutionError` (the base URL's host, a download
  origin's, or the environment's proxy's)
* a TLS certificate that does not verify, or a handshake the server does not take part in:
  :class:`TLSError` (``host:port``, and why in the ssl module's words)
* the environment's proxy refused the connection: a TransportError naming the proxy (userinfo
  removed) and the variable that set it
* a connection made and then closed or reset unanswered: "closed the connection without answering"
* a refused connection to this machine: nothing is listening there (start the server)
* anything else: "cannot reach the SOPHON server"

Which of these are retried at all is the retry policy's business (``retry.failure_kind``); this
module only names them. No I/O: it reads the exception chain and the environment's proxy settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sophon_cli.client.errors import NameResolutionError, NextStep, ProxyInUse, TLSError, TransportError
from sophon_cli.client.text import display_url, one_line, redact, safe_field


def classify(
    exc: BaseException,
    attempts: int,
    *,
    base_url: str,
    secrets: tuple[str, ...] = (),
    proxied: bool = True,
) -> TransportError:
    """The error for ``exc`` (an httpx transport error, or an OSError), after ``attempts`` attempts
    at ``base_url``. ``proxied``: whether the client may send through the environment's proxy
    (False for a custom transport, or a client that ignores the environment)."""
    import httpx

    from sophon_cli.client.http import is_loopback
    from sophon_cli.client.retry import name_failure, tls_failure

    proxy = _proxy_for(exc) if proxied else None
    failure = name_failure(exc)
    if failure is not None:
        return _name_error(exc, failure, attempts, base_url, secrets, proxy)
    tls = tls_failure(exc)
    if tls is not None:
        return _tls_error(exc, tls, attempts, base_url, secrets)
    shown = display_url(base_url)
    kind = type(exc).__name__
    detail = one_line(redact(str(exc), secrets), 120)
    reason = f"{kind}: {detail}" if detail else kind
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if proxy is not None and isinstance(exc, httpx.ConnectError):  # the connection to the proxy failed
        return TransportError(
            f"cannot reach the proxy {proxy.url} (set by {proxy.variable}) for {shown}{tries} ({reason})",
            url=shown,
            hint="check the proxy setting",
            next_step=NextStep.CHECK_PROXY,
            attempts=attempts,
            proxy=proxy,
        )
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        # connected, then the server closed or reset the connection without an answer
        return TransportError(
            f"the SOPHON server at {shown} closed the connection without answering{tries} "
            f"({_dropped_reason(exc) or reason})",
            url=shown,
            hint="try again later; if it keeps happening, check that the base URL is the API's",
            next_step=NextStep.CONNECTION_DROPPED,
            attempts=attempts,
        )
    step = NextStep.CHECK_CONNECTION
    hint = "check your network and the base URL (or use the local server)"
    if any(isinstance(c, ConnectionRefusedError) for c in causes(exc)) and is_loopback(base_url):
        step, hint = NextStep.START_SERVER, "start the server at that address"
        reason = "connection refused: nothing is listening there"
    return TransportError(
        f"cannot reach the SOPHON server at {shown}{tries} ({reason})",
        url=shown,
        hint=hint,
        next_step=step,
        attempts=attempts,
    )


def causes(exc: BaseException | None) -> Iterable[BaseException]:
    """``exc`` and the exceptions it was raised from (httpx and http.client wrap the socket's)."""
    from sophon_cli.client.retry import exception_chain

    return exception_chain(exc)


def _request_url(exc: BaseException) -> Any:
    try:
        return exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # not an httpx error, or no request attached
        return None


def _proxy_for(exc: BaseException) -> ProxyInUse | None:
    """The environment's proxy that the failed request went to (as httpx reads HTTP_PROXY,
    HTTPS_PROXY, ALL_PROXY and NO_PROXY), or None: no proxy, or a loopback URL (never proxied)."""
    from urllib.request import getproxies, proxy_bypass_environment

    from sophon_cli.client.http import is_loopback

    url = _request_url(exc)
    if url is None or is_loopback(str(url)):
        return None
    proxies = getproxies()
    for name in (url.scheme, "all"):
        proxy = proxies.get(name)
        if proxy:
            if proxy_bypass_environment(url.host, proxies):
                return None
            return ProxyInUse(display_url(proxy), f"{name.upper()}_PROXY")
    return None


def _dropped_reason(exc: BaseException) -> str:
    """How a connection was dropped, in a few words: the socket's own ("connection reset by
    peer"), or httpx's when no OSError is behind it ("server disconnected without sending a
    response")."""
    for cause in causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
    return one_line(str(exc), 80).rstrip(".").lower()


def _tls_error(
    exc: BaseException, failure: Any, attempts: int, base_url: str, secrets: tuple[str, ...]
) -> TLSError:
    """A TLS failure: the host (and port) of the request, and why, in the ssl module's words."""
    import ssl
    from urllib.parse import urlsplit

    from sophon_cli.client.retry import TLSFailure

    base = urlsplit(base_url)
    url = _request_url(exc)
    host, port = (url.host, url.port) if url is not None else (base.hostname or "", base.port)
    where = f"{host}:{port}" if port else host
    detail = ""
    for cause in causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError) and failure == TLSFailure.CERTIFICATE:
            detail = str(cause.verify_message or "")
            break
        if isinstance(cause, ssl.SSLError):
            detail = str(cause.reason or "").replace("_", " ").lower()
            break
    default = 443 if base.scheme == "https" else 80
    same = host == base.hostname and (port or default) == (base.port or default)
    return TLSError(
        safe_field(where, secrets, 260),
        failure=failure,
        url=display_url(base_url) if same else None,  # None: another host (a download's)
        detail=one_line(redact(detail, secrets), 120),
        attempts=attempts,
    )


def _name_error(
    exc: BaseException,
    failure: Any,
    attempts: int,
    base_url: str,
    secrets: tuple[str, ...],
    proxy: ProxyInUse | None,
) -> NameResolutionError:
    """A host name that did not resolve: the proxy's when the request went to one, else the host
    of the request (the base URL's, or a download's), with the resolver's own words."""
    import socket
    from urllib.parse import urlsplit

    request_url = _request_url(exc)
    host = request_url.host if request_url is not None else ""
    base_host = urlsplit(base_url).hostname or ""
    url = display_url(base_url)
    if not host or host == base_host:
        host = base_host or host
    else:
        url = ""  # another host than the base URL's (a download origin): name only the host
    cause = next((c for c in causes(exc) if isinstance(c, socket.gaierror)), None)
    detail = cause.strerror if isinstance(cause, socket.gaierror) and cause.strerror else ""
    if proxy is not None:  # the proxy's name did not resolve (the server's is the proxy's to resolve)
        host, url = proxy.host or host, display_url(base_url)
    return NameResolutionError(
        safe_field(host, secrets, 253),
        failure=failure,
        url=url or None,
        detail=one_line(detail, 80),
        attempts=attempts,
        proxy=proxy,
    )


__all__ = ["causes", "classify"]
