"""Exceptions raised by the client library.

    SophonError                      every error this library raises
    ├── InputError                   bad local input (missing file, bad metadata, ...) -> exit 2
    │   └── TargetExistsError        a file (or symlink) is in the way (.path)            -> exit 2
    ├── ConfigError                  missing API key or unusable configuration           -> exit 4
    │   ├── NoKeyError               no API key is configured (found before any request)  -> exit 4
    │   └── ConfigFileError          a config/secrets file that cannot be parsed, or an
    │                                unknown profile (.path, .line; also an InputError)  -> exit 2
    ├── TransportError               server unreachable after retries (has .url)         -> exit 8
    │   ├── NameResolutionError      the host name does not resolve (.host, .failure);
    │   │                            said at once (or after one retry for EAI_AGAIN)     -> exit 8
    │   └── TLSError                 the TLS certificate did not verify, or the handshake
    │                                failed (.host, .failure); said at once              -> exit 8
    ├── IntegrityError               a hash or size did not match what the server said    -> exit 1
    │   └── SizeExceededError        more bytes arrived than expected (.limit); none kept -> exit 1
    ├── JobFailedError               a waited-for job ended failed or canceled (.job)    -> exit 5
    ├── WaitTimeoutError             gave up waiting (.job_ids)                          -> exit 6
    ├── SignatureError               a webhook delivery did not verify (.reason)          -> exit 1
    └── APIError                     the server answered with an error envelope
        │                            (.status, .code, .message, .retryable, .request_id)
        ├── BadRequestError          400, 422                                            -> exit 1
        ├── AuthError                401, 403                                            -> exit 4
        │   ├── KeyMissingError      401 to a request that carried no API key
        │   ├── KeyRejectedError     401: the server did not accept the API key sent
        │   ├── ForbiddenError       403: the request is not allowed (the key's permission)
        │   └── LinkRefusedError     401/403 to a signed download link: its token expired or is
        │                            not valid (the key plays no part; .job_id)
        ├── NotFoundError            404                                                 -> exit 3
        ├── ConflictError            409                                                 -> exit 1
        ├── RateLimitError           429                                                 -> exit 1
        └── ServerError              5xx                                                 -> exit 1
            └── MalformedResponseError  a reply this client cannot use ("the server sent …") -> exit 1

The CLI maps these to exit codes and words the next step for a terminal user in one place
(``sophon_cli.cli.errors`` with the ``sophon_cli.cli.hints`` table); the library itself knows nothing
about exit codes or command-line flags. It says what the next step is as a :class:`NextStep` (and a
flag-free ``hint`` for Python callers). Messages never contain the API key or download tokens.

``error_from_response`` and ``decode_json`` (the response -> error mapping used by every resource
module) live here so that ``http`` and the resource modules do not import each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import httpx


class NextStep(str, enum.Enum):
    """What the user should do next, as data: the CLI words each one (``cli/hints.py``)."""

    OVERWRITE = "overwrite"  # an existing file is in the way: allow replacing it
    NEW_SESSION = "new_session"  # replay refused: start over with fresh idempotency keys
    FRESH_JOB = "fresh_job"  # the recorded job is unusable: make a fresh one
    WAIT_FOR_JOB = "wait_for_job"  # the job is not finished: wait for it, then retry
    WAIT_AGAIN = "wait_again"  # gave up waiting: wait again (longer)
    RESUME = "resume"  # interrupted: the same call again resumes
    SET_KEY = "set_key"  # missing or wrong API key
    CHECK_CONNECTION = "check_connection"  # the server did not answer: check the network and base URL
    CHECK_HOST_NAME = "check_host_name"  # the base URL's host name does not exist: check the URL
    CHECK_DNS = "check_dns"  # the resolver did not answer: check the network and DNS, then the URL
    CHECK_CERTIFICATE = "check_certificate"  # the certificate did not verify: the host, or the CA bundle
    CHECK_SCHEME = "check_scheme"  # no TLS handshake: the URL's scheme or port is wrong
    START_SERVER = "start_server"  # nothing listens at a loopback address: start the server there
    RAISE_TIMEOUT = "raise_timeout"  # no answer in time: check the network or allow more time
    CHECK_PROXY = "check_proxy"  # the environment's proxy could not be reached: check that setting
    CONNECTION_DROPPED = "connection_dropped"  # the server closed connections unanswered: later, or the URL
    FRESH_LINK = "fresh_link"  # a signed download link was refused: get a fresh one (download again)


class SophonError(Exception):
    """Base class. ``hint`` is the next step in words free of any command-line syntax; ``next_step``
    the same as data, for front ends that word it themselves."""

    hint: str | None = None
    next_step: NextStep | None = None

    def __init__(self, message: str, *, hint: str | None = None, next_step: NextStep | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        if next_step is not None:
            self.next_step = next_step

    def __str__(self) -> str:
        return self.message


class InputError(SophonError):
    """Bad local input: a missing/unreadable file, a bad flag value, invalid metadata..."""


class TargetExistsError(InputError):
    """The output path already holds something this writer did not write (a file, a symlink):
    it is never replaced without ``force``. ``path`` is the target; ``kind`` is ``"file"``,
    ``"symlink"`` or ``"directory"`` (a directory is never replaced, even with ``force``)."""

    next_step = NextStep.OVERWRITE

    def __init__(self, path: str, *, kind: str = "file", hint: str | None = None) -> None:
        what = {"symlink": "is a symbolic link", "directory": "is a directory"}.get(kind, "already exists")
        if hint is None:
            hint = "choose another output location" if kind == "directory" else "allow overwriting it"
        super().__init__(f"{path} {what}", hint=hint)
        self.path = path
        self.kind = kind
        if kind == "directory":
            self.next_step = None


class ConfigError(SophonError):
    """Missing API key or unusable configuration."""


class NoKeyError(ConfigError):
    """No API key is configured for a call that needs one (a front end checks before sending)."""

    next_step = NextStep.SET_KEY

    def __init__(
        self, message: str = "no API key is set", *, hint: str | None = "configure an API key"
    ) -> None:
        super().__init__(message, hint=hint)


class ConfigFileError(ConfigError, InputError):
    """A configuration (or secrets) file that cannot be used: not valid TOML, a value of the wrong
    type, or a profile that is not in it. ``path`` names the file, ``line`` the line when known.
    Bad local input (exit 2), not an authentication problem."""

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.line = line


class TransportError(SophonError):
    """The server could not be reached, or a stream stalled (after retries). ``attempts`` counts
    the attempts made. ``proxy``: when the environment's proxy could not be reached, that proxy
    (``ProxyInUse``: its URL without userinfo, and the variable that set it)."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        hint: str | None = None,
        attempts: int = 1,
        next_step: NextStep | None = None,
        proxy: ProxyInUse | None = None,
    ) -> None:
        super().__init__(message, hint=hint, next_step=next_step)
        self.url = url
        self.attempts = attempts
        self.proxy = proxy


@dataclass(frozen=True)
class ProxyInUse:
    """The proxy a request went to: ``url`` (userinfo removed) and ``variable`` (``HTTPS_PROXY``...)."""

    url: str
    variable: str

    @property
    def host(self) -> str:
        from urllib.parse import urlsplit

        try:
            return urlsplit(self.url).hostname or ""
        except ValueError:
            return ""


class NameResolutionError(TransportError):
    """The host name of the URL (``host``) did not resolve. ``failure`` says how
    (:class:`sophon_cli.client.retry.NameFailure`): ``not_found`` when the resolver answered that
    the name does not exist (no retry: the same answer would come back), ``temporary`` when it
    could not get an answer (EAI_AGAIN; retried once)."""

    def __init__(
        self,
        host: str,
        *,
        failure: Any,
        url: str | None = None,
        detail: str = "",
        attempts: int = 1,
        proxy: ProxyInUse | None = None,
    ) -> None:
        from sophon_cli.client.retry import NameFailure

        temporary = failure == NameFailure.TEMPORARY
        if temporary:
            why = (
                f"the DNS resolver did not answer: {detail}" if detail else "the DNS resolver did not answer"
            )
        else:
            why = detail or "no such host"
        tries = f" (tried {attempts} times)" if attempts > 1 else ""
        where = f" of {url}" if url else ""
        hint = (
            "check the network connection and DNS, then the host name in the base URL"
            if temporary
            else "check the host name in the base URL"
        )
        step = NextStep.CHECK_DNS if temporary else NextStep.CHECK_HOST_NAME
        if proxy is not None:  # the proxy's name, not the server's: the environment's proxy setting
            where = f" of the proxy {proxy.url} (set by {proxy.variable})"
            hint, step = "check the proxy setting", NextStep.CHECK_PROXY
        super().__init__(
            f"cannot resolve the host name {host!r}{where} ({why}){tries}",
            url=url,
            hint=hint,
            next_step=step,
            attempts=attempts,
            proxy=proxy,
        )
        self.host = host
        self.failure = failure


class TLSError(TransportError):
    """A TLS connection to ``host`` (``host:port``) could not be made. ``failure``
    (:class:`sophon_cli.client.retry.TLSFailure`): ``certificate`` when the server's certificate
    did not verify (``detail`` says why: self-signed, expired, another host's), ``handshake`` when
    the handshake failed (a server that speaks plain HTTP on that port). Not retried."""

    def __init__(
        self, host: str, *, failure: Any, url: str | None = None, detail: str = "", attempts: int = 1
    ) -> None:
        from sophon_cli.client.retry import TLSFailure

        if failure == TLSFailure.CERTIFICATE:
            what = f"the TLS certificate of {host} did not verify"
            hint, step = (
                "check the host name; a private CA needs its certificate trusted",
                NextStep.CHECK_CERTIFICATE,
            )
        else:
            what = f"the TLS handshake with {host} failed"
            hint, step = "check that the URL's scheme and port are the server's", NextStep.CHECK_SCHEME
        super().__init__(
            f"{what} ({detail})" if detail else what, url=url, hint=hint, next_step=step, attempts=attempts
        )
        self.host = host
        self.failure = failure


class IntegrityError(SophonError):
    """A checksum or size did not match."""


class SizeExceededError(IntegrityError):
    """More bytes arrived than the expected size (``limit``): the writer stopped before writing
    past it and kept nothing of the suspect body. ``path`` is the target."""

    def __init__(self, path: str, limit: int, *, received: int | None = None) -> None:
        more = f" (at least {received})" if received is not None else ""
        super().__init__(
            f"the server sent more than the expected {limit} bytes{more} for {path}; nothing was kept",
            hint="try again later; report it if it persists",
        )
        self.path = path
        self.limit = limit
        self.received = received


class JobFailedError(SophonError):
    """A job ended ``failed`` or ``canceled``. ``job`` is the final job model."""

    def __init__(self, message: str, *, job: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.job = job


class WaitTimeoutError(SophonError):
    """Gave up waiting for jobs to finish."""

    def __init__(
        self,
        message: str,
        *,
        job_ids: list[str] | None = None,
        hint: str | None = None,
        next_step: NextStep | None = None,
    ) -> None:
        super().__init__(message, hint=hint, next_step=next_step)
        self.job_ids = job_ids or []


class SignatureError(SophonError):
    """A webhook delivery failed verification. ``reason`` is a stable machine-readable string
    (one of ``sophon_cli.client.webhooks.REASONS``)."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class APIError(SophonError):
    """The server answered with an error status and (usually) the error envelope.

    ``retryable`` is the policy's verdict; ``envelope_retryable`` what the envelope said (None when
    it said nothing); ``attempts`` how many attempts the call made; ``path`` the request path
    (download tokens redacted), so a front end can word the next step for the resource concerned.
    ``enveloped`` is False when the body was not the API's error envelope (an HTML page from a
    proxy, an empty body): the reply may not have come from the API at all.
    """

    enveloped: bool = True

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        request_id: str | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
        next_step: NextStep | None = None,
        envelope_retryable: bool | None = None,
        attempts: int = 1,
        path: str = "",
    ) -> None:
        super().__init__(message, hint=hint, next_step=next_step)
        self.status = status
        self.code = code
        self.retryable = retryable
        self.request_id = request_id
        self.retry_after = retry_after
        self.envelope_retryable = envelope_retryable
        self.attempts = attempts
        self.path = path

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, code={self.code!r}, "
            f"message={self.message!r}, retryable={self.retryable}, request_id={self.request_id!r})"
        )


class BadRequestError(APIError):
    """400 or 422: the request or the source was rejected."""


class AuthError(APIError):
    """401 or 403. Raised as one of its subclasses by the request path: :class:`KeyMissingError`
    or :class:`KeyRejectedError` for a 401 (by whether the request carried a key), and
    :class:`ForbiddenError` for a 403. ``message`` stays the server's words (about its headers, not
    about how this client was configured); front ends word the problem themselves."""


class KeyMissingError(AuthError):
    """401 to a request sent without an API key: one is needed."""

    next_step = NextStep.SET_KEY


class KeyRejectedError(AuthError):
    """401 to a request that carried an API key: the server does not accept that key (mistyped,
    revoked, or meant for another server)."""

    next_step = NextStep.SET_KEY


class ForbiddenError(AuthError):
    """403: the server knows the credentials and refuses this request (a key without the needed
    permission). A refused signed download link is a :class:`LinkRefusedError` instead."""


class LinkRefusedError(AuthError):
    """401 or 403 to the GET of a signed download link (not the API): the link's token expired or
    is not valid. The API key plays no part (the link is fetched without it); the next step is a
    fresh link, which asking the API for the job's output again gives. ``job_id``: the job whose
    output the link was for (None when not known)."""

    next_step = NextStep.FRESH_LINK
    hint = (
        "the download link's token expired or is not valid: download the job's output again for a fresh link"
    )
    job_id: str | None = None


class NotFoundError(APIError):
    """404."""


class ConflictError(APIError):
    """409: idempotency conflict, job not cancelable, output not ready, wrong upload state."""


class RateLimitError(APIError):
    """429."""


class ServerError(APIError):
    """5xx."""


class MalformedResponseError(ServerError):
    """The server sent a reply this client cannot use: not JSON where JSON is due, an empty 200, a
    body larger than allowed or than announced, a bad Content-Length, undecodable gzip, a redirect
    loop or a redirect off http(s). ``status`` is the HTTP status (0 when none was read); the
    message starts with "the server sent"."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        request_id: str | None = None,
        code: str = "invalid_response",
        hint: str | None = "check that the base URL points at a SOPHON API server",
        path: str = "",
    ) -> None:
        super().__init__(status, code, message, request_id=request_id, hint=hint, path=path)

    def __str__(self) -> str:
        return self.message


def error_class_for_status(
    status: int, *, authenticated: bool | None = None, link: bool = False
) -> type[APIError]:
    """The APIError class for ``status``. ``authenticated``: whether the request carried the API
    key (None: unknown), which tells the two kinds of 401 apart; ``link``: the request was the GET
    of a signed download link, whose 401 and 403 are about its token, never the key."""
    if link and status in (401, 403):
        return LinkRefusedError
    if status == 401:
        if authenticated is None:
            return AuthError
        return KeyRejectedError if authenticated else KeyMissingError
    if status == 403:
        return ForbiddenError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequestError
    return APIError


# -- response -> error -----------------------------------------------------------------------------


def error_from_response(
    response: httpx.Response,
    *,
    secrets: tuple[str, ...] = (),
    authenticated: bool | None = None,
    link: bool = False,
) -> APIError:
    """Build the typed APIError for an error response (envelope or not). Every server-supplied
    field is redacted (``secrets``, download tokens) and stripped of control characters.
    ``authenticated``, ``link``: what the request was (see :func:`error_class_for_status`)."""
    from sophon_cli.client.retry import parse_retry_after, should_retry_status
    from sophon_cli.client.text import redact, safe_field

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
        if not isinstance(body, dict):
            message = f"{message} with {_body_kind(response)} instead of an API error"
    path = response.request.url.path if response.request is not None else ""
    cls = error_class_for_status(status, authenticated=authenticated, link=link)
    err = cls(
        status,
        safe_field(code, secrets, 100),
        safe_field(message, secrets),
        retryable=bool(retryable) if retryable is not None else should_retry_status(status, None),
        request_id=safe_field(request_id, secrets, 100) if request_id else None,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        envelope_retryable=retryable,
        path=redact(path),
    )
    err.enveloped = isinstance(body, dict)
    return err


def _body_kind(response: httpx.Response) -> str:
    """What an error body that is not the API's envelope is, in a few words."""
    if not response.content:
        return "an empty body"
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "text/html" or (not ctype and response.content.lstrip()[:1] == b"<"):
        return "an HTML page"
    if ctype and len(ctype) <= 60 and all(c.isalnum() or c in "/.+-" for c in ctype):
        return f"{'an' if ctype[0] in 'aeiou' else 'a'} {ctype} body"
    return "a body"


def decode_json(response: httpx.Response, *, secrets: tuple[str, ...] = ()) -> Any:
    """The JSON body of a success response; a body that is not JSON is a MalformedResponseError."""
    try:
        return response.json()
    except Exception:
        what = "an empty response" if not response.content else "a response that is not valid JSON"
        raise malformed(f"{what} (HTTP {response.status_code})", response, secrets=secrets) from None


def malformed(
    what: str, response: httpx.Response | None = None, *, secrets: tuple[str, ...] = ()
) -> MalformedResponseError:
    """A MalformedResponseError saying "the server sent <what>" (request id and path redacted)."""
    from sophon_cli.client.text import redact, safe_field

    request_id = response.headers.get("x-request-id") if response is not None else None
    path = ""
    if response is not None:
        try:
            path = response.request.url.path
        except RuntimeError:  # a response built without a request
            path = ""
    return MalformedResponseError(
        safe_field(f"the server sent {what}", secrets),
        status=response.status_code if response is not None else 0,
        request_id=safe_field(request_id, secrets, 100) if request_id else None,
        path=redact(path),
    )


#: RemoteProtocolError texts that mean the connection dropped (retry) rather than a malformed reply
_DROPPED = ("server disconnected", "peer closed connection", "connection reset", "connection closed")


def malformed_from_transport(
    exc: BaseException, *, secrets: tuple[str, ...] = ()
) -> MalformedResponseError | None:
    """The MalformedResponseError for an httpx failure that means the reply itself was unusable
    (a bad Content-Length, an illegal status line, undecodable gzip, a redirect loop or a redirect
    off http(s)); None for failures that mean the server could not be reached or dropped the
    connection (those are retried and end as TransportError)."""
    import httpx

    from sophon_cli.client.text import one_line, redact

    detail = one_line(redact(str(exc), secrets), 120)
    if isinstance(exc, httpx.TooManyRedirects):
        return malformed("a redirect loop (too many redirects)", secrets=secrets)
    if isinstance(exc, httpx.DecodingError):
        return malformed(f"a body that could not be decoded ({detail})", secrets=secrets)
    if isinstance(exc, httpx.RemoteProtocolError):
        if any(d in str(exc).lower() for d in _DROPPED):
            return None
        return malformed(f"a malformed HTTP response ({detail})", secrets=secrets)
    return None
