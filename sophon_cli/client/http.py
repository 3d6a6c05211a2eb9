"""SophonClient: one httpx.Client per client, bearer auth, retries, error envelope -> exceptions.

Retry policy (one place, used by every call):

* retried: network errors (connect/read/write failures, timeouts, dropped connections), 408, 429,
  5xx (except 501), and any error envelope that says ``"retryable": true`` unless the status is
  one that is never retried (400, 401, 403, 404, 422). An explicit ``"retryable": false`` on a
  429/5xx envelope (e.g. ``quota_exceeded``) stops the retries: the server said waiting won't help.
* delay: capped full-jitter exponential backoff, ``uniform(0, min(cap, base * 2**attempt))``; when the
  response carries ``Retry-After`` (delta-seconds or an HTTP date) that value is used instead,
  capped at :data:`RETRY_AFTER_CAP` seconds.
* bounded: at most ``max_retries`` retries and ``retry_budget`` seconds in total per call.
* POST requests always carry an ``Idempotency-Key`` (a random one if the caller gave none) and are
  retried with that same key, so a retry can never create a second resource.

The API key lives only in the ``Authorization`` header of the authenticated httpx client. It never
appears in reprs, error messages or the ``httpx``/``httpcore`` log records (a logging filter redacts
known secrets and download tokens from them).
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sophon_cli import __version__
from sophon_cli.client.errors import (
    APIError,
    AuthError,
    BadRequestError,
    ConflictError,
    InputError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TransportError,
    error_class_for_status,
)

if TYPE_CHECKING:  # pragma: no cover
    import httpx

    from sophon_cli.client.downloads import Downloads
    from sophon_cli.client.jobs import Jobs
    from sophon_cli.client.models import Ready
    from sophon_cli.client.uploads import Uploads
    from sophon_cli.client.webhooks import Webhooks

USER_AGENT = f"sophon-cli/{__version__}"
RETRY_AFTER_CAP = 60.0  # never sleep longer than this because a server asked us to
BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0
RETRY_STATUSES = frozenset({408, 429})
NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 422})
IDEMPOTENCY_KEY_MAX = 128

# ---------------------------------------------------------------------------------------------
# Pure helpers (unit-tested directly)
# ---------------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or None when absent/unparseable.

    Accepts delta-seconds (``"3"``, also a decimal like ``"1.5"``) and an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). A date in the past gives 0. The result is not capped here.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(
    attempt: int,
    *,
    rng: random.Random | None = None,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
) -> float:
    """Full-jitter backoff for retry number ``attempt`` (0 for the first retry): a uniform draw from
    ``[0, min(cap, base * 2**attempt)]``."""
    ceiling = min(cap, base * (2 ** min(max(attempt, 0), 30)))
    return (rng or random).uniform(0.0, ceiling)


def retry_delay(
    attempt: int,
    retry_after: float | None,
    *,
    rng: random.Random | None = None,
    cap: float = RETRY_AFTER_CAP,
) -> float:
    """The delay before the next attempt: ``Retry-After`` (capped) when the server sent one,
    otherwise :func:`backoff_delay`."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    return backoff_delay(attempt, rng=rng)


def should_retry_status(status: int, envelope_retryable: bool | None) -> bool:
    """Whether a response with this status (and envelope ``retryable`` flag, None if absent) is retried."""
    if status in NEVER_RETRY_STATUSES:
        return False
    if status in RETRY_STATUSES or (status >= 500 and status != 501):
        return envelope_retryable is not False
    return envelope_retryable is True


def new_idempotency_key() -> str:
    """A random key for POSTs whose caller did not pass one (retries of that call reuse it)."""
    return f"sc-rnd-{uuid.uuid4().hex}"


_TOKEN_PATH_RE = re.compile(r"(/downloads/)[^/?#\s\"']+")
_QUERY_SECRET_RE = re.compile(
    r"(?i)([?&](?:token|signature|sig|key|x-amz-signature|x-amz-credential)=)[^&#\s\"']+"
)


def redact(text: str, secrets: list[str] | tuple[str, ...] | set[str] = ()) -> str:
    """Remove download tokens, signed-URL query secrets and the given secret strings from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _TOKEN_PATH_RE.sub(r"\1***", text)
    text = _QUERY_SECRET_RE.sub(r"\1***", text)
    return text


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def display_url(url: str) -> str:
    """``url`` without userinfo, query or fragment: safe to show to the user."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^@/]*@)?([^/?#]*)([^?#]*)", url)
    if not m:
        return redact(url)
    return redact(m.group(1) + m.group(2) + m.group(3)).rstrip("/")


# ---------------------------------------------------------------------------------------------
# Logging: keep secrets out of httpx/httpcore records
# ---------------------------------------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_FILTER_INSTALLED = False
_LOGGER_NAMES = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)


class RedactingFilter(logging.Filter):
    """Rewrites log records of the httpx/httpcore loggers so that API keys and download tokens
    (e.g. in ``HTTP Request: GET http://…/v1/downloads/<token>``) never reach a log handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - a broken record is not our problem
            return True
        with _SECRETS_LOCK:
            secrets = tuple(_SECRETS)
        cleaned = redact(message, secrets)
        if cleaned != message:
            record.msg = cleaned
            record.args = ()
        return True


def _install_log_filter(secret: str | None) -> None:
    global _FILTER_INSTALLED
    with _SECRETS_LOCK:
        if secret:
            _SECRETS.add(secret)
        if _FILTER_INSTALLED:
            return
        _FILTER_INSTALLED = True
    flt = RedactingFilter()
    for name in _LOGGER_NAMES:
        logging.getLogger(name).addFilter(flt)


# ---------------------------------------------------------------------------------------------
# Error mapping
# ---------------------------------------------------------------------------------------------

_CODE_HINTS = {
    "output_not_ready": "wait for the job to finish (`sophon job wait <id>`), then download",
    "job_not_cancelable": "the job already finished; see it with `sophon job get <id>`",
    "conflict": "an earlier request used the same idempotency key with different data; rerun with --new",
    "quota_exceeded": "your plan's quota is used up; wait for it to reset or upgrade the plan",
    "capacity_exceeded": "the server is short of disk space; try again later",
    "source_invalid": "check that the file is a playable video (try opening it in a player)",
    "source_unsupported": "convert the source to a common format (e.g. H.264 MP4) and retry",
    "validation_error": "check the options you passed (see `--help`)",
    "rate_limited": "slow down: wait a moment and retry",
    "output_persistence_failed": "the server could not store the output; submit the job again",
}


def _hint_for(status: int, code: str, path: str) -> str:
    if code in _CODE_HINTS:
        return _CODE_HINTS[code]
    if status == 401:
        return "check SOPHON_API_KEY or run `sophon config set-key`"
    if status == 403:
        if "/downloads/" in path:
            return "the download link expired or is invalid; run the download again for a fresh link"
        return "the API key lacks the permission for this; use a key with the needed scope"
    if status == 404:
        if path.startswith("/v1/webhooks"):
            return "check the id (`sophon webhooks list`)"
        if path.startswith("/v1/uploads"):
            return "the upload session is gone or expired; upload the file again"
        if "/downloads/" in path:
            return "the output file is gone; run the download again"
        return "check the id (`sophon job list`)"
    if status == 409:
        return "the resource is in the wrong state for this; check it with `sophon job get <id>`"
    if status == 429:
        return "slow down: wait a moment and retry"
    if status >= 500:
        return "the server failed; try again later and quote the request id if it persists"
    return "check the request (see `--help`)"


def error_from_response(response: httpx.Response, *, secrets: tuple[str, ...] = ()) -> APIError:
    """Build the typed APIError for an error response (envelope or not)."""
    status = response.status_code
    code = ""
    message = ""
    retryable: bool | None = None
    request_id: str | None = None
    try:
        data = response.json()
    except Exception:
        data = None
    body = data.get("error") if isinstance(data, dict) else None
    if isinstance(body, dict):
        code = str(body.get("code") or "")
        message = str(body.get("message") or "")
        if isinstance(body.get("retryable"), bool):
            retryable = body["retryable"]
        if body.get("request_id"):
            request_id = str(body["request_id"])
    if not request_id:
        request_id = response.headers.get("x-request-id") or None
    if not code:
        code = f"http_{status}"
    if not message:
        reason = response.reason_phrase or "error"
        message = f"the server answered HTTP {status} {reason}".rstrip()
    path = response.request.url.path if response.request is not None else ""
    message = one_line(redact(message, secrets))
    cls = error_class_for_status(status)
    err = cls(
        status,
        code,
        message,
        retryable=bool(retryable) if retryable is not None else should_retry_status(status, None),
        request_id=request_id,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        hint=_hint_for(status, code, redact(path)),
    )
    err.envelope_retryable = retryable  # type: ignore[attr-defined]
    return err


# ---------------------------------------------------------------------------------------------
# TLS: load the CA bundle only when a TLS connection can happen
# ---------------------------------------------------------------------------------------------


def _is_plain_http(url: str) -> bool:
    return url[:7].lower() == "http://"


def is_loopback(url: str) -> bool:
    """True for URLs on this machine (127.0.0.0/8, ::1, localhost): never sent through a proxy."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _lazy_verified_transport(limits: httpx.Limits) -> httpx.BaseTransport:
    """A transport that builds a default (certificate-verifying) HTTPTransport on first use."""
    import httpx

    class _LazyVerifiedTransport(httpx.BaseTransport):
        def __init__(self) -> None:
            self._inner: httpx.HTTPTransport | None = None
            self._lock = threading.Lock()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            with self._lock:
                if self._inner is None:
                    self._inner = httpx.HTTPTransport(verify=True, limits=limits)
                inner = self._inner
            return inner.handle_request(request)

        def close(self) -> None:
            with self._lock:
                inner, self._inner = self._inner, None
            if inner is not None:
                inner.close()

    return _LazyVerifiedTransport()


def plain_http_options(
    url: str, transport: httpx.BaseTransport | None, limits: httpx.Limits
) -> dict[str, Any]:
    """``httpx.Client`` options that skip loading the CA bundle (20-50 ms) for a plain-http URL.

    ``verify`` only matters for TLS connections, and none is made to an ``http://`` URL. Any
    ``https://`` URL the client still reaches (an absolute URL, a redirect to https) is routed to
    a transport that verifies certificates as usual, built on first use. Nothing changes for an
    https URL, a custom transport, or when the environment configures a proxy (whose connection
    may itself be TLS).
    """
    if not _is_plain_http(url) or transport is not None:
        return {}
    options: dict[str, Any] = {"verify": False, "mounts": {"https://": _lazy_verified_transport(limits)}}
    if is_loopback(url):
        # the local server: an HTTP(S)_PROXY from the environment must not capture loopback traffic
        return {**options, "trust_env": False}
    from urllib.request import getproxies

    if getproxies():
        return {}
    return options


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


class SophonClient:
    """A SOPHON API client. Thread-safe; use one per process (or per base URL + key).

    ``sleep``, ``rng`` and ``clock`` are injectable so retry and polling logic can be tested without
    real waiting. ``concurrency`` sizes the connection pool (upload workers share it).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_retries: int = 5,
        retry_budget: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        concurrency: int = 8,
        user_agent: str | None = None,
    ) -> None:
        import httpx

        if not base_url:
            raise ValueError("base_url is required")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or ""
        self.max_retries = max(0, int(max_retries))
        self.retry_budget = float(retry_budget)
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        self.timeout = timeout
        _install_log_filter(self._api_key)

        pool = max(32, 2 * concurrency)  # upload workers never wait for a free connection
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=30.0)
        self._timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        headers = {"User-Agent": user_agent or USER_AGENT, "Accept": "application/json"}
        auth_headers = dict(headers)
        if self._api_key:
            auth_headers["Authorization"] = f"Bearer {self._api_key}"
        self._custom_transport = transport
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=auth_headers,
            timeout=self._timeout,
            limits=limits,
            transport=transport,
            follow_redirects=False,
            **plain_http_options(self.base_url, transport, limits),
        )
        # Signed download URLs are fetched by a separate client that never has the key.
        self._anon_headers = {"User-Agent": user_agent or USER_AGENT}
        self._anon_limits = limits
        self._anon: httpx.Client | None = None
        self._anon_plain: httpx.Client | None = None  # for http:// signed URLs (no CA bundle)
        self._anon_lock = threading.Lock()
        self._resources: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"SophonClient(base_url={display_url(self.base_url)!r})"

    def __enter__(self) -> SophonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        for anon in (self._anon, self._anon_plain):
            if anon is not None:
                anon.close()

    @property
    def _secret_values(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()

    # -- resources (built on first use) ------------------------------------------------------

    def _resource(self, name: str, factory: Callable[[SophonClient], Any]) -> Any:
        res = self._resources.get(name)
        if res is None:
            res = self._resources.setdefault(name, factory(self))
        return res

    @property
    def uploads(self) -> Uploads:
        from sophon_cli.client.uploads import Uploads

        return self._resource("uploads", Uploads)

    @property
    def jobs(self) -> Jobs:
        from sophon_cli.client.jobs import Jobs

        return self._resource("jobs", Jobs)

    @property
    def downloads(self) -> Downloads:
        from sophon_cli.client.downloads import Downloads

        return self._resource("downloads", Downloads)

    @property
    def webhooks(self) -> Webhooks:
        from sophon_cli.client.webhooks import Webhooks

        return self._resource("webhooks", Webhooks)

    # -- health ----------------------------------------------------------------------------------

    def healthz(self) -> bool:
        """True when ``GET /healthz`` answers 2xx, False for any other HTTP status.
        Raises TransportError when the server cannot be reached."""
        response = self.request("GET", "/healthz", expect=None, retry=False)
        return 200 <= response.status_code < 300

    def readyz(self) -> Ready:
        """The readiness report (200 and 503 both carry one)."""
        from sophon_cli.client.models import Ready, parse_model

        response = self.request("GET", "/readyz", expect=None, retry=False)
        if response.status_code not in (200, 503):
            raise error_from_response(response, secrets=self._secret_values)
        return parse_model(Ready, response)

    # -- the one request path ----------------------------------------------------------------

    def anon_client(self, url: str | None = None) -> httpx.Client:
        """An httpx client that carries NO Authorization header (for signed download URLs).

        Pass the signed ``url`` when known: for a plain-http URL the client then skips loading the
        CA bundle (redirects to https are still verified, see :func:`plain_http_options`).
        """
        import httpx

        options = plain_http_options(url, self._custom_transport, self._anon_limits) if url else {}
        with self._anon_lock:
            client = self._anon_plain if options else self._anon
            if client is None:
                client = httpx.Client(
                    headers=self._anon_headers,
                    timeout=self._timeout,
                    limits=self._anon_limits,
                    transport=self._custom_transport,
                    follow_redirects=True,
                    **options,
                )
                if options:
                    self._anon_plain = client
                else:
                    self._anon = client
            return client

    def transport_error(self, exc: BaseException, attempts: int) -> TransportError:
        kind = type(exc).__name__
        detail = one_line(redact(str(exc), self._secret_values), 120)
        reason = f"{kind}: {detail}" if detail else kind
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        err = TransportError(
            f"cannot reach the SOPHON server at {display_url(self.base_url)}{tries} ({reason})",
            url=display_url(self.base_url),
            hint="check your network and SOPHON_BASE_URL (or use --local for the local server)",
        )
        err.attempts = attempts  # type: ignore[attr-defined]
        return err

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        expect: tuple[int, ...] | None = (200,),
        retry: bool = True,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one logical request with the retry policy; return the response.

        A status outside ``expect`` is retried when the policy says so, else raises the mapped
        APIError. ``expect=None`` returns whatever status arrives (only network errors are
        retried). Network failures that outlast the retries raise TransportError. ``timeout``
        overrides the client's read/write timeout for this call. ``content`` may also be a
        re-iterable of bytes blocks (each attempt iterates it again from the start); pass its
        ``Content-Length`` in ``headers`` so that it is not sent chunked.
        """
        import httpx

        method = method.upper()
        hdrs = dict(headers or {})
        if method == "POST":
            key = idempotency_key or new_idempotency_key()
            if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
                raise InputError(
                    f"an Idempotency-Key must be 1 to 128 characters (got {len(key)})",
                    hint="pass a shorter key",
                )
            hdrs["Idempotency-Key"] = key
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        per_call = (
            httpx.Timeout(timeout, connect=self._timeout.connect) if timeout is not None else self._timeout
        )
        deadline = self.clock() + self.retry_budget
        max_attempts = 1 + (self.max_retries if retry else 0)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method,
                    path,
                    params=params or None,
                    json=json,
                    content=content,
                    headers=hdrs,
                    timeout=per_call,
                )
            except httpx.TransportError as exc:
                # An invalid URL or unsupported protocol is a configuration problem: no retry.
                if isinstance(exc, httpx.UnsupportedProtocol):
                    raise self.transport_error(exc, attempt) from None
                delay = retry_delay(attempt - 1, None, rng=self.rng)
                if attempt >= max_attempts or self.clock() + delay > deadline:
                    raise self.transport_error(exc, attempt) from None
                self.sleep(delay)
                continue

            status = response.status_code
            if expect is None or status in expect:
                return response
            err = error_from_response(response, secrets=self._secret_values)
            if (
                should_retry_status(status, getattr(err, "envelope_retryable", None))
                and attempt < max_attempts
            ):
                delay = retry_delay(attempt - 1, err.retry_after, rng=self.rng)
                if self.clock() + delay <= deadline:
                    response.close()
                    self.sleep(delay)
                    continue
            err.attempts = attempt  # type: ignore[attr-defined]
            raise err

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return decode_json(response)


def decode_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except Exception:
        raise ServerError(
            response.status_code,
            "invalid_response",
            "the server sent a response that is not valid JSON",
            request_id=response.headers.get("x-request-id"),
            hint="check SOPHON_BASE_URL points at a SOPHON API server",
        ) from None


__all__ = [
    "SophonClient",
    "parse_retry_after",
    "backoff_delay",
    "retry_delay",
    "should_retry_status",
    "error_from_response",
    "redact",
    "display_url",
    "new_idempotency_key",
    "APIError",
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
]
