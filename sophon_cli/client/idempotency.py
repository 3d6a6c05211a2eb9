"""Deterministic Idempotency-Keys: one key per *intent*, one suffix per *route*.

An intent is everything that shapes a request body: for an upload the content (its fingerprint or
its full sha256, see ``client.content``), size, and the name and mime type derived from the
content; for a job the upload's content plus the job options. Hashing a canonical JSON of those
fields gives the same key on a rerun, after the local cache was lost, or on another machine, so the
server replays the original response instead of creating a second session or job. Passing a random
``nonce`` (``--new`` / ``--force``) makes a fresh intent on purpose.

The server scopes keys per route and answers 409 when one key is reused on another route, so every
route gets its own suffix::

    base = intent_key("upload", fingerprint=fp, size=n, name="3f2a….mp4", mime="video/mp4")
    create_key = route_key(base, "create-upload")
    complete_key = route_key(base, "complete-upload")

When the session an intent replays is unusable (canceled, expired, gone), its replacement is
``generation_key(base, 1)``, then 2, …: every run and every machine probes the generations in
the same order, so they all end on the same replacement instead of one random session each.

Keys are at most 128 characters (the API's limit), ASCII only.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

MAX_KEY_LENGTH = 128
PREFIX = "sc1"
ROUTES = frozenset({"create-upload", "complete-upload", "create-job", "create-webhook"})
_KIND_RE = re.compile(r"[^a-z0-9]+")
_ROUTE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal data always serialises to equal text.
    ``None`` members of dicts are dropped, so adding an unset option later keeps old keys stable."""
    return json.dumps(
        _drop_none(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    )


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


def new_nonce() -> str:
    """A random nonce for intents that must not replay an earlier one (``--new``)."""
    return secrets.token_hex(8)


def intent_key(kind: str, **fields: Any) -> str:
    """``sc1-<kind>-<sha256 hex>`` over the canonical JSON of ``kind`` and ``fields``."""
    short = _KIND_RE.sub("-", kind.lower()).strip("-")[:16] or "intent"
    digest = hashlib.sha256(canonical_json({"kind": kind, "fields": fields}).encode()).hexdigest()
    return f"{PREFIX}-{short}-{digest}"


def generation_key(base: str, generation: int) -> str:
    """The base key of the ``generation``-th replacement of an intent (0 is the intent itself)."""
    if generation < 0:
        raise ValueError("generation must be >= 0")
    return base if generation == 0 else f"{base}-g{int(generation)}"


def route_key(base: str, route: str) -> str:
    """``<base>:<route>``, at most 128 characters (a long base is replaced by its hash)."""
    if not _ROUTE_RE.match(route):
        raise ValueError(f"invalid route name {route!r}")
    suffix = f":{route}"
    if not base or len(base) + len(suffix) > MAX_KEY_LENGTH or not (base.isascii() and base.isprintable()):
        base = f"{PREFIX}-h-{hashlib.sha256(base.encode()).hexdigest()}"
    return base + suffix
