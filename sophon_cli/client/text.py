"""Text that came from a server (or holds a secret) made safe to show.

* :func:`terminal_safe` strips C0/C1 control characters (ANSI escape sequences as a whole), DEL and
  bidi overrides from server-supplied text (error messages, codes, request ids, file names) so a
  hostile server cannot retitle, clear or recolour the user's terminal.
* :func:`redact` removes the API key (or other secrets), download tokens and signed-URL query
  secrets from text.
* :func:`one_line` folds whitespace and bounds the length; :func:`display_url` drops userinfo,
  query and fragment from a URL.

Pure and import-light: the CLI renders every server-supplied field through :func:`safe_field`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# ESC-introduced sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), other 2-char escapes;
# and their 8-bit forms (CSI = U+009B, OSC = U+009D).
_ESCAPE_SEQ = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC (terminated or not)
    r"|\x1b[P^_X][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, PM, APC, SOS
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_WHITESPACE_CONTROL = re.compile("[\t\n\r]")


def terminal_safe(text: object) -> str:
    """``text`` without control characters: escape sequences are removed whole, tabs and newlines
    become spaces, every other C0/C1 character, DEL and bidi override is dropped."""
    value = str(text)
    value = _ESCAPE_SEQ.sub("", value)
    value = _WHITESPACE_CONTROL.sub(" ", value)
    return _CONTROL.sub("", value)


def strip_controls(text: object) -> str:
    """Like :func:`terminal_safe`, but tabs and newlines stay (for already laid-out output such as
    tab-separated rows): every other C0/C1 character, escape sequence, DEL and bidi override goes."""
    value = _ESCAPE_SEQ.sub("", str(text))
    return _CONTROL.sub("", value.replace("\r", " "))


_TOKEN_PATH_RE = re.compile(r"(/downloads/)[^/?#\s\"']+")
_QUERY_SECRET_RE = re.compile(
    r"(?i)([?&](?:token|signature|sig|key|x-amz-signature|x-amz-credential)=)[^&#\s\"']+"
)


_REGISTERED: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Remember ``secret`` (an API key a client was given): :func:`redact` removes it from every
    text from then on, whether or not the caller passes it."""
    if secret and len(secret) >= 4:
        _REGISTERED.add(secret)


def known_secrets() -> tuple[str, ...]:
    return tuple(_REGISTERED)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove download tokens, signed-URL query secrets, the given secret strings and every
    registered secret from ``text``."""
    for secret in sorted({*secrets, *known_secrets()}, key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _TOKEN_PATH_RE.sub(r"\1***", text)
    text = _QUERY_SECRET_RE.sub(r"\1***", text)
    return text


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters: a longer one is cut at the last space
    that fits (never mid-word, unless one word alone is longer) and ends in "…"."""
    value = " ".join(str(text).split())
    if len(value) > limit:
        head = value[: limit - 1]
        space = head.rfind(" ")
        if space > limit // 2:
            head = head[:space].rstrip(",;:")
        value = head + "…"
    return value


def safe_field(text: object, secrets: Iterable[str] = (), limit: int = 300) -> str:
    """A server-supplied field ready for a terminal: redacted, control characters stripped, one line."""
    return one_line(redact(terminal_safe(text), tuple(secrets)), limit)


def display_url(url: str) -> str:
    """``url`` without userinfo, query or fragment: safe to show to the user."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^@/]*@)?([^/?#]*)([^?#]*)", url)
    if not m:
        return redact(url)
    return redact(m.group(1) + m.group(2) + m.group(3)).rstrip("/")


__all__ = [
    "display_url",
    "known_secrets",
    "one_line",
    "redact",
    "register_secret",
    "safe_field",
    "strip_controls",
    "terminal_safe",
]
