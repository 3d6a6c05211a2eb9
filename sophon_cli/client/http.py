"""SophonClient: one httpx.Client per client, bearer auth, retries, error envelope -> exceptions.

Every request goes through :meth:`SophonClient.request` and the one retry policy
(:class:`sophon_cli.client.retry.RetryPolicy`: what is retried, full-jitter backoff or
Retry-After, at most ``max_retries`` retries within ``retry_budget`` seconds). Downloads use the
same policy object through :meth:`SophonClient.retry_state`.

* POST requests always carry an ``Idempotency-Key`` (a random one if the caller gave none) and are
  retried with that same key, so a retry can never create a second resource.

The API key lives only in the ``Authorization`` header of the authenticated httpx client. It never
appears in reprs, error messages or the ``httpx``/``httpcore`` log records (a logging filter redacts
known secrets and download tokens from them).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sophon_cli import __version__
from sophon_cli.client.direct import SendableBody
from sophon_cli.client.errors import (
    InputError,
    NextStep,
    TransportError,
    decode_json,
    error_from_response,
    malformed,
    malformed_from_transport,
)
from sophon_cli.client.retry import RetryObserver, RetryPolicy, RetryState
from sophon_cli.client.text import display_url, redact, register_secret, safe_field
from sophon_cli.client.trace import HttpEvent, HttpObserver, redact_headers, shown_path

if TYPE_CHECKING:  # pragma: no cover
    import http.client
    import ssl

    import httpx

    from sophon_cli.client.downloads import Downloads
    from sophon_cli.client.jobs import Jobs
    from sophon_cli.client.models import Ready
    from sophon_cli.client.uploads import Uploads
    from sophon_cli.client.webhooks import Webhooks

USER_AGENT = f"sophon-cli/{__version__}"
IDEMPOTENCY_KEY_MAX = 128
#: the largest API response read into memory (JSON replies are a few KiB)
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: streamed bodies (downloads): fail when fewer than MIN_RATE bytes/s arrived over STALL_SECONDS
STALL_SECONDS = 30.0
MIN_RATE = 1024.0


class _DeadlineExceeded(Exception):
    """The whole request (connect to last byte) took longer than the client's timeout."""


def new_idempotency_key() -> str:
    """A random key for POSTs whose caller did not pass one (retries of that call reuse it)."""
    return f"sc-rnd-{uuid.uuid4().hex}"


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
    register_secret(secret)
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
                    from sophon_cli.client.deadline import install

                    install(self._inner)
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
        on_retry: RetryObserver | None = None,
        stall_seconds: float = STALL_SECONDS,
        min_rate: float = MIN_RATE,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
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
        self.retry_policy = RetryPolicy(max_retries=self.max_retries, budget=self.retry_budget, rng=self.rng)
        self.retry_observers: list[RetryObserver] = [on_retry] if on_retry is not None else []
        #: hear about every finished HTTP attempt (HttpEvent: no key, no download token in it)
        self.http_observers: list[HttpObserver] = []
        self.timeout = float(timeout)
        #: a streamed body fails (and is resumed by the retry) when fewer than ``min_rate`` bytes/s
        #: arrived over ``stall_seconds``
        self.stall_seconds = float(stall_seconds)
        self.min_rate = float(min_rate)
        self.max_response_bytes = int(max_response_bytes)
        _install_log_filter(self._api_key)

        pool = max(32, 2 * concurrency)  # upload workers never wait for a free connection
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=30.0)
        self._timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        # a streamed body that sends nothing for stall_seconds has stalled
        self._stream_timeout = httpx.Timeout(
            min(timeout, self.stall_seconds), connect=min(connect_timeout, timeout)
        )
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
        # SOPHON_TIMEOUT bounds each API request as a whole, status line and headers included
        from sophon_cli.client.deadline import install_on_client

        install_on_client(self._http)
        # Signed download URLs are fetched by a separate client that never has the key.
        self._anon_headers = {"User-Agent": user_agent or USER_AGENT}
        self._anon_limits = limits
        self._anon: httpx.Client | None = None
        self._anon_plain: httpx.Client | None = None  # for http:// signed URLs (no CA bundle)
        self._anon_lock = threading.Lock()
        self._resources: dict[str, Any] = {}
        # upload parts through http.client (client/direct.py), where that is httpx's request
        from sophon_cli.client.direct import Pool

        self._direct_ok: bool | None = None
        self._direct_pool = Pool()
        self._tls: ssl.SSLContext | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"SophonClient(base_url={display_url(self.base_url)!r})"

    def __enter__(self) -> SophonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._direct_pool.close()
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
            raise error_from_response(
                response, secrets=self._secret_values, authenticated=self._sends_key("/readyz")
            )
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
                    timeout=self._stream_timeout,
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
        """The TransportError for a network failure that outlasted the retries (see
        :mod:`sophon_cli.client.netfail`: what it was, which host, the next step)."""
        from sophon_cli.client import netfail

        return netfail.classify(
            exc,
            attempts,
            base_url=self.base_url,
            secrets=self._secret_values,
            proxied=self._custom_transport is None and self._http.trust_env,
        )

    def stall_error(self, what: str, attempts: int) -> TransportError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return TransportError(
            f"{what} from {display_url(self.base_url)} stalled{tries} (fewer than "
            f"{self.min_rate / 1024:g} KiB/s over {self.stall_seconds:g} s)",
            url=display_url(self.base_url),
            next_step=NextStep.RESUME,
            attempts=attempts,
        )

    def retry_state(self, *, retry: bool = True, method: str = "", path: str = "") -> RetryState:
        """A fresh attempt counter for one logical call under the client's retry policy."""
        return self.retry_policy.start(
            clock=self.clock,
            retry=retry,
            observers=tuple(self.retry_observers),
            method=method,
            path=redact(path),
        )

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
        ``Content-Length`` in ``headers`` so that it is not sent chunked. A
        :class:`~sophon_cli.client.direct.SendableBody` (an upload part) is sent through
        ``http.client`` from its own buffers where that is the request httpx would make (see
        ``client/direct.py``); everything else about the call (retries, deadline, tracing, errors)
        is the same on both paths.
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
        limit = float(timeout) if timeout is not None else self.timeout
        direct_body = isinstance(content, SendableBody) and not params and self._direct_usable()
        state = self.retry_state(retry=retry, method=method, path=path)
        while True:
            attempt = state.begin()
            try:
                if direct_body:
                    response = self._send_direct(
                        method, path, body=content, headers=hdrs, limit=limit, attempt=attempt
                    )
                else:
                    response = self._send_bounded(
                        method,
                        path,
                        params=params or None,
                        json=json,
                        content=content,
                        headers=hdrs,
                        limit=limit,
                        attempt=attempt,
                    )
            except _DeadlineExceeded:
                delay = state.next_delay(reason="deadline")
                if delay is None:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise TransportError(
                        f"the SOPHON server at {display_url(self.base_url)} did not answer within "
                        f"{limit:g} s{tries}",
                        url=display_url(self.base_url),
                        hint="check your network, or raise the timeout",
                        next_step=NextStep.RAISE_TIMEOUT,
                        attempts=attempt,
                    ) from None
                self.sleep(delay)
                continue
            except (httpx.TooManyRedirects, httpx.DecodingError) as exc:
                raise malformed_from_transport(exc, secrets=self._secret_values) from None  # type: ignore[misc]
            except httpx.TransportError as exc:
                bad = malformed_from_transport(exc, secrets=self._secret_values)
                if bad is not None:
                    raise bad from None
                # An invalid URL or unsupported protocol is a configuration problem: no retry.
                delay = None
                if not isinstance(exc, httpx.UnsupportedProtocol):
                    delay = state.next_delay(reason=type(exc).__name__, error=exc)
                if delay is None:
                    raise self.transport_error(exc, attempt) from None
                self.sleep(delay)
                continue

            status = response.status_code
            if expect is None or status in expect:
                return response
            if 300 <= status < 400:
                raise malformed(
                    f"a redirect (HTTP {status}) where an answer was due",
                    response,
                    secrets=self._secret_values,
                )
            err = error_from_response(
                response, secrets=self._secret_values, authenticated=self._sends_key(path)
            )
            err.attempts = attempt
            delay = state.next_delay(
                status=status, envelope_retryable=err.envelope_retryable, retry_after=err.retry_after
            )
            if delay is None:
                raise err
            response.close()
            self.sleep(delay)

    def _sends_key(self, path: str) -> bool | None:
        """Whether a request to ``path`` carried the API key: requests to the base URL do when the
        client has one; an absolute URL elsewhere is not known (None)."""
        if "://" in path and not path.startswith(self.base_url + "/"):
            return None
        return bool(self._api_key)

    def _direct_usable(self) -> bool:
        if self._direct_ok is None:
            from sophon_cli.client import direct

            self._direct_ok = direct.usable(
                self.base_url, custom_transport=self._custom_transport is not None
            )
        return self._direct_ok

    def _tls_context(self) -> ssl.SSLContext:
        """httpx's default verifying context (its CA bundle and SSL_CERT_* rules), made once."""
        with self._anon_lock:
            if self._tls is None:
                import httpx

                self._tls = httpx.create_ssl_context()
            return self._tls

    def _send_direct(
        self,
        method: str,
        path: str,
        *,
        body: SendableBody,
        headers: Mapping[str, str],
        limit: float,
        attempt: int = 1,
    ) -> httpx.Response:
        """One attempt of a request with a large body, through ``http.client``: the same bounds
        as :meth:`_send_bounded` (connect within the connect timeout, every write and read within
        ``limit``, the whole reply within ``limit`` of the body being sent, at most
        ``max_response_bytes`` of it), the same headers, the same trace and the same errors."""
        import http.client

        import httpx

        from sophon_cli.client import direct

        url = self.base_url + path
        sent = httpx.Headers(self._http.headers)
        sent["Accept-Encoding"] = "identity"
        sent.update(headers)
        sent["Content-Length"] = str(len(body))
        request = httpx.Request(method, url, headers=sent)  # what was sent, for -v and errors
        started = time.monotonic()
        conn = self._direct_pool.take()
        response: httpx.Response | None = None
        stage = "connect"
        write_error: OSError | None = None
        try:
            try:
                if conn is None:
                    connect = min(self._timeout.connect or limit, limit)
                    conn = direct.connection(url, timeout=connect, ssl_context=self._tls_context)
                    conn.connect()
                sock = conn.sock
                assert sock is not None
                sock.settimeout(limit)  # every write and read, as httpx's per-call timeouts
                stage = "write"
                conn.putrequest(method, direct.target(url), skip_accept_encoding=True)
                for name, value in sent.raw:  # as httpx writes them (names' case kept)
                    conn.putheader(name, value)
                conn.endheaders()
                try:
                    body.send_to(sock)
                except OSError as exc:
                    # the server may have answered (and closed) before taking the whole body:
                    # its reply, when there is one, says why (httpcore reads it too)
                    write_error = exc
                stage = "read"
                response = self._direct_reply(conn, request, limit)
            except (OSError, http.client.HTTPException) as exc:
                failure: BaseException = exc
                if write_error is not None:  # no reply after a failed write: the write's error
                    failure, stage = write_error, "write"
                raise direct.transport_error(
                    failure, request, reading=stage == "read", writing=stage == "write"
                ) from failure
        except BaseException as exc:
            if conn is not None:
                conn.close()
            kind = "deadline" if isinstance(exc, _DeadlineExceeded) else type(exc).__name__
            self.trace(request, response, started, attempt, error=kind)
            raise
        self.trace(request, response, started, attempt)
        return response

    def _direct_reply(
        self, conn: http.client.HTTPConnection, request: httpx.Request, limit: float
    ) -> httpx.Response:
        """Read the whole reply to a request sent on ``conn``: within ``limit`` in all, at most
        ``max_response_bytes`` of body, decoded as httpx decodes it; ``conn`` goes back to the
        pool when it stays open."""
        import http.client

        import httpx

        from sophon_cli.client import direct

        watchdog = direct.HeadWatchdog(conn, limit)
        try:
            raw = conn.getresponse()
            headers = httpx.Headers(raw.getheaders())
            direct.check_lengths(headers, request)
            cap = self.max_response_bytes
            announced = headers.get("content-length", "").strip()
            if announced.isdigit() and int(announced) > cap:
                head = httpx.Response(raw.status, headers=headers, request=request)
                raise malformed(
                    f"a response of {int(announced)} bytes (more than the {cap} allowed)",
                    head,
                    secrets=self._secret_values,
                )
            content = raw.read(cap + 1)
        except (OSError, http.client.HTTPException):
            if watchdog.fired:
                raise _DeadlineExceeded() from None
            raise
        finally:
            watchdog.cancel()
        if watchdog.fired:  # cut after the last read: what was read is not the whole reply
            raise _DeadlineExceeded()
        if "transfer-encoding" in headers:
            del headers["transfer-encoding"]  # http.client undid the chunking
        if "content-encoding" in headers:  # asked for identity, got a coding: httpx decodes it
            headers["content-length"] = str(len(content))
            content = httpx.Response(raw.status, headers=headers, content=content, request=request).content
            del headers["content-encoding"]
        if len(content) > cap:
            head = httpx.Response(raw.status, headers=headers, request=request)
            raise malformed(
                f"a response larger than the {cap} bytes allowed", head, secrets=self._secret_values
            )
        headers["content-length"] = str(len(content))
        reply = httpx.Response(
            raw.status,
            headers=headers,
            content=content,
            request=request,
            extensions={
                "reason_phrase": (raw.reason or "").encode("latin-1", "replace"),
                "http_version": b"HTTP/1.0" if raw.version == 10 else b"HTTP/1.1",
            },
        )
        if raw.will_close:
            conn.close()
        else:
            self._direct_pool.put(conn)
        return reply

    def _send_bounded(
        self, method: str, path: str, *, limit: float, attempt: int = 1, **kwargs: Any
    ) -> httpx.Response:
        """One attempt, bounded as a whole: the body is read here (at most ``max_response_bytes``,
        decoded) and the attempt fails with _DeadlineExceeded once ``limit`` seconds have passed
        since it started (for a request with an upload body: since the body was sent), however
        slowly the bytes trickle in. Returns a fully read response."""
        import httpx

        from sophon_cli.client.deadline import bounded

        started = time.monotonic()
        per_call = httpx.Timeout(limit, connect=min(self._timeout.connect or limit, limit))
        request = self._http.build_request(method, path, timeout=per_call, **kwargs)
        response: httpx.Response | None = None
        cap = self.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        # Every read (status line, headers, body) waits at most until the deadline (see
        # client/deadline.py). An upload body is bounded by the per-write timeout and the caller's
        # own rate rules (a part may take longer than the timeout on a slow link), so for it the
        # clock starts at the first read of the reply.
        with bounded(limit, start_now=kwargs.get("content") is None) as clock:
            try:
                try:
                    response = self._http.send(request, stream=True)
                    announced = response.headers.get("content-length", "").strip()
                    if announced.isdigit() and int(announced) > cap:
                        raise malformed(
                            f"a response of {int(announced)} bytes (more than the {cap} allowed)",
                            response,
                            secrets=self._secret_values,
                        )
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > cap:
                            raise malformed(
                                f"a response larger than the {cap} bytes allowed",
                                response,
                                secrets=self._secret_values,
                            )
                        chunks.append(chunk)
                except httpx.TimeoutException:
                    if clock.expired:  # cut by the whole-request deadline, not one slow read
                        raise _DeadlineExceeded() from None
                    raise
            except BaseException as exc:
                kind = "deadline" if isinstance(exc, _DeadlineExceeded) else type(exc).__name__
                self.trace(request, response, started, attempt, error=kind)
                raise
            finally:
                if response is not None:
                    response.close()
        headers = response.headers.copy()
        for name in ("content-encoding", "transfer-encoding"):
            if name in headers:
                del headers[name]
        headers["content-length"] = str(size)
        full = httpx.Response(
            response.status_code,
            headers=headers,
            content=b"".join(chunks),
            request=request,
            extensions={
                k: v for k, v in response.extensions.items() if k in ("reason_phrase", "http_version")
            },
        )
        self.trace(request, response, started, attempt)
        return full

    def trace(
        self,
        request: httpx.Request,
        response: httpx.Response | None,
        started: float,
        attempt: int,
        *,
        error: str | None = None,
    ) -> None:
        """Tell the http observers about one finished attempt (credentials redacted)."""
        if not self.http_observers:
            return
        url = request.url
        host = None if url.host == self._http.base_url.host else url.host
        request_id = response.headers.get("x-request-id") if response is not None else None
        secrets = self._secret_values
        event = HttpEvent(
            method=request.method,
            path=shown_path(url.path, url.query.decode("ascii", "replace"), host),
            status=response.status_code if response is not None else None,
            elapsed=time.monotonic() - started,
            attempt=attempt,
            request_id=safe_field(request_id, secrets, 100) if request_id else None,
            error=error,
            request_headers=redact_headers(request.headers.multi_items(), secrets),
            response_headers=redact_headers(response.headers.multi_items(), secrets)
            if response is not None
            else (),
        )
        for observer in tuple(self.http_observers):
            try:
                observer(event)
            except Exception:  # pragma: no cover - an observer never breaks a request
                pass

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return decode_json(response, secrets=self._secret_values)


__all__ = [
    "SophonClient",
    "decode_json",
    "display_url",
    "error_from_response",
    "new_idempotency_key",
    "redact",
]
