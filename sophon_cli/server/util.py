"""Small helpers shared by the server modules (stdlib only)."""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timezone

TERMINAL = ("completed", "failed", "canceled")
ACTIVE = ("probing", "encoding", "muxing", "uploading_output")
JOB_STATUSES = ("queued", *ACTIVE, *TERMINAL)

PROFILES = tuple(
    [f"sophon-{f}" for f in ("espresso", "cortado", "americano")]
    + [f"sophon-{f}-hq" for f in ("espresso", "cortado", "americano")]
    + [f"sophon-{f}-10bit" for f in ("espresso", "cortado", "americano")]
    + [f"sophon-{f}-hq-10bit" for f in ("espresso", "cortado", "americano")]
    + ["sophon-auto"]
)


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC timestamp with millisecond precision, or None."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False, allow_nan=False)  # strict JSON only


def redact_path(path: str) -> str:
    """Hide download tokens (the credential of /v1/downloads/{token}) in logged paths."""
    if path.startswith("/v1/downloads/"):
        return "/v1/downloads/<redacted>"
    return path
