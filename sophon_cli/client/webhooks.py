"""Webhook endpoints (create/list/delete) and delivery signature verification.

A delivery carries ``X-Turbo-Signature-256: sha256=<hex>`` where ``<hex>`` is
HMAC-SHA256(secret, ``"{X-Turbo-Timestamp}.{raw body}"``) and ``X-Turbo-Timestamp`` is RFC 3339
(integer epoch seconds are accepted too). Verify the raw bytes *before* parsing the JSON, then
dedupe on the body's ``event_id`` (deliveries are at-least-once).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote

from sophon_cli.client.errors import NotFoundError, SignatureError

if TYPE_CHECKING:  # pragma: no cover
    from sophon_cli.client.http import SophonClient
    from sophon_cli.client.models import Webhook, WebhookItem

SIGNATURE_HEADER = "X-Turbo-Signature-256"
TIMESTAMP_HEADER = "X-Turbo-Timestamp"
EVENT_ID_HEADER = "X-Turbo-Event-Id"
SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE = 300

MISSING_SIGNATURE = "missing_signature"
MISSING_TIMESTAMP = "missing_timestamp"
BAD_PREFIX = "bad_prefix"
BAD_HEX = "bad_hex"
BAD_TIMESTAMP = "bad_timestamp"
TIMESTAMP_OUT_OF_TOLERANCE = "timestamp_out_of_tolerance"
SIGNATURE_MISMATCH = "signature_mismatch"
REASONS = frozenset(
    {
        MISSING_SIGNATURE,
        MISSING_TIMESTAMP,
        BAD_PREFIX,
        BAD_HEX,
        BAD_TIMESTAMP,
        TIMESTAMP_OUT_OF_TOLERANCE,
        SIGNATURE_MISMATCH,
    }
)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_timestamp(value: str) -> float | None:
    """RFC 3339 (``2026-01-02T03:04:05Z``, offsets, fractions) or integer epoch seconds ->
    epoch seconds; None when unparseable. A timestamp without a UTC offset is rejected."""
    text = value.strip()
    if re.fullmatch(r"-?\d{1,12}", text):
        return float(int(text))
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", text):
        return None
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    # Python 3.10's fromisoformat takes only 3 or 6 fractional digits
    text = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    text = text[:10] + "T" + text[11:]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:  # pragma: no cover - the regex requires an offset
        return None
    return dt.timestamp()


def compute_signature(body: bytes, timestamp: str, secret: str) -> str:
    """``sha256=<hex>`` for a body and its timestamp header (what the server sends)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | datetime | None = None,
) -> None:
    """Raise SignatureError(reason) unless ``signature`` is the valid HMAC of ``body`` and the
    timestamp is within ``tolerance`` seconds of ``now`` (either direction). Pure: no I/O.

    ``body`` must be the raw request bytes. ``now`` is epoch seconds or an aware datetime
    (default: the current time).
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not signature or not signature.strip():
        raise SignatureError(
            f"the delivery has no {SIGNATURE_HEADER} header",
            reason=MISSING_SIGNATURE,
            hint="reject the request",
        )
    if not timestamp or not timestamp.strip():
        raise SignatureError(
            f"the delivery has no {TIMESTAMP_HEADER} header",
            reason=MISSING_TIMESTAMP,
            hint="reject the request",
        )
    signature = signature.strip()
    if not signature.lower().startswith(SIGNATURE_PREFIX):
        raise SignatureError(
            f"the signature does not start with {SIGNATURE_PREFIX!r}",
            reason=BAD_PREFIX,
            hint="reject the request",
        )
    given = signature[len(SIGNATURE_PREFIX) :]
    if not _HEX64.match(given):
        raise SignatureError(
            "the signature is not 64 hexadecimal characters", reason=BAD_HEX, hint="reject the request"
        )
    sent_at = parse_timestamp(timestamp)
    if sent_at is None:
        raise SignatureError(
            "the timestamp is neither RFC 3339 nor epoch seconds",
            reason=BAD_TIMESTAMP,
            hint="reject the request",
        )
    if now is None:
        current = time.time()
    elif isinstance(now, datetime):
        current = (now if now.tzinfo else now.replace(tzinfo=timezone.utc)).timestamp()
    else:
        current = float(now)
    skew = current - sent_at
    if abs(skew) > tolerance:
        where = "old" if skew > 0 else "far in the future"
        raise SignatureError(
            f"the timestamp is {abs(skew):.0f}s {where} (tolerance {tolerance:g}s)",
            reason=TIMESTAMP_OUT_OF_TOLERANCE,
            hint="reject the request (replay?) or check the clocks",
        )
    expected = compute_signature(body, timestamp, secret)[len(SIGNATURE_PREFIX) :]
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii")):
        raise SignatureError(
            "the signature does not match the body",
            reason=SIGNATURE_MISMATCH,
            hint="check the webhook secret; reject the request",
        )


class Webhooks:
    def __init__(self, client: SophonClient) -> None:
        self._c = client

    def create(self, url: str, *, name: str | None = None, idempotency_key: str | None = None) -> Webhook:
        """Register an endpoint. The returned model's ``secret`` is shown only this once.
        Without ``idempotency_key`` a random one is used (retries of this call still reuse it)."""
        from sophon_cli.client.models import Webhook, parse_model

        body: dict[str, str] = {"url": url}
        if name is not None:
            body["name"] = name
        response = self._c.request(
            "POST", "/v1/webhooks", json=body, idempotency_key=idempotency_key, expect=(200, 201)
        )
        return parse_model(Webhook, response)

    def list(self) -> list[WebhookItem]:
        from sophon_cli.client.models import WebhookList, parse_model

        return parse_model(WebhookList, self._c.request("GET", "/v1/webhooks")).webhooks

    def delete(self, webhook_id: str) -> None:
        """Deactivate an endpoint. A 404 is raised as NotFoundError, except when it only happened
        because a retried delete had already worked."""
        try:
            self._c.request(
                "DELETE", f"/v1/webhooks/{quote(str(webhook_id), safe='')}", expect=(200, 202, 204)
            )
        except NotFoundError as exc:
            if getattr(exc, "attempts", 1) > 1:
                return
            raise
