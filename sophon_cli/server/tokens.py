"""Signed download tokens: ``base64url(job_id:expiry:nonce).base64url(HMAC-SHA256)``.

The HMAC key is a per-data-dir secret (file ``token_secret``, mode 0600), so tokens survive a
restart and cannot be forged without the data dir. The random nonce makes every token unguessable
even for a known job id and expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

DEFAULT_TTL = 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """The token is malformed, forged or expired (the message says which, never the token)."""


class TokenSigner:
    def __init__(self, secret: str | bytes) -> None:
        self._key = secret.encode() if isinstance(secret, str) else secret

    def _sig(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, job_id: str, ttl: float = DEFAULT_TTL, now: float | None = None) -> tuple[str, float]:
        expires = int((time.time() if now is None else now) + ttl)
        payload = f"{job_id}:{expires}:{secrets.token_hex(8)}".encode()
        return f"{_b64(payload)}.{_b64(self._sig(payload))}", float(expires)

    def verify(self, token: str, now: float | None = None) -> str:
        """Return the job id the token grants, or raise TokenError."""
        try:
            p64, s64 = token.split(".", 1)
            payload = _unb64(p64)
            sig = _unb64(s64)
        except (ValueError, TypeError) as exc:
            raise TokenError("malformed download token") from exc
        if not hmac.compare_digest(sig, self._sig(payload)):
            raise TokenError("invalid download token")
        try:
            job_id, expires, _nonce = payload.decode().split(":")
            exp = int(expires)
        except ValueError as exc:
            raise TokenError("malformed download token") from exc
        if (time.time() if now is None else now) > exp:
            raise TokenError("download token expired")
        return job_id
