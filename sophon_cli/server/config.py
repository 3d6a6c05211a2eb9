"""Configuration of the local SOPHON-compatible server (plain dataclass, no third-party imports)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from . import bodyrate

API_KEY_FILE = "api_key"
TOKEN_SECRET_FILE = "token_secret"
DB_FILE = "sophon.db"
STATE_FILE = "server.json"
KEYS_ENV = "SOPHON_SERVER_API_KEYS"
UPLOAD_TTL = 24 * 3600.0  # seconds an upload session (and its completed source) can be used
RETENTION = 7 * 24 * 3600.0  # seconds a job's output stays downloadable after completion
BODY_IDLE_ENV = "SOPHON_SERVER_BODY_IDLE_SECONDS"
BODY_IDLE = 60.0  # seconds a request body may go without a byte before the request is abandoned
HEADER_TIMEOUT_ENV = "SOPHON_SERVER_HEADER_TIMEOUT_SECONDS"
HEADER_TIMEOUT = 60.0  # seconds from a request's first byte (or a connection's idle start) to its headers


def _seconds_from_env(name: str, default: float) -> float:
    """``$name`` as a number of seconds if set, else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds > 0, not {raw!r}") from None


def _body_idle_default() -> float:
    """``$SOPHON_SERVER_BODY_IDLE_SECONDS`` if set, else :data:`BODY_IDLE`."""
    return _seconds_from_env(BODY_IDLE_ENV, BODY_IDLE)


def _header_timeout_default() -> float:
    """``$SOPHON_SERVER_HEADER_TIMEOUT_SECONDS`` if set, else :data:`HEADER_TIMEOUT`."""
    return _seconds_from_env(HEADER_TIMEOUT_ENV, HEADER_TIMEOUT)


@dataclass
class ServerConfig:
    data_dir: Path
    api_keys: list[str] = field(default_factory=list, repr=False)  # secrets: never in reprs
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 1
    chunk_size: int | None = None
    faults: str | None = None
    faults_seed: int | None = None
    allow_insecure_webhooks: bool = False
    webhook_retry_delays: tuple[float, ...] = (10.0, 60.0)
    request_log: Path | None = None
    log_requests: bool = False  # one human line per request on stderr (the CLI turns this on)
    idle_timeout: float | None = None
    lease_seconds: float = 30.0
    upload_ttl: float = UPLOAD_TTL
    retention: float = RETENTION
    body_idle_seconds: float = field(default_factory=_body_idle_default)
    body_min_rate: float = field(default_factory=bodyrate.min_rate_default)  # bytes/s (bodyrate.py)
    body_rate_window: float = field(default_factory=bodyrate.window_default)  # seconds
    header_timeout_seconds: float = field(default_factory=_header_timeout_default)  # headertime.py

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.request_log is not None:
            self.request_log = Path(self.request_log)
        self.webhook_retry_delays = tuple(float(d) for d in self.webhook_retry_delays)
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if not (self.upload_ttl > 0 and self.retention > 0):
            raise ValueError("upload_ttl and retention must be > 0 seconds")
        self.body_idle_seconds = float(self.body_idle_seconds)
        if not (0 < self.body_idle_seconds < float("inf")):  # (also refuses nan)
            raise ValueError(f"body_idle_seconds ({BODY_IDLE_ENV}) must be a number of seconds > 0")
        self.header_timeout_seconds = float(self.header_timeout_seconds)
        if not (0 < self.header_timeout_seconds < float("inf")):
            raise ValueError(f"header_timeout_seconds ({HEADER_TIMEOUT_ENV}) must be a number of seconds > 0")
        self.body_min_rate, self.body_rate_window = bodyrate.check_settings(
            self.body_min_rate, self.body_rate_window
        )


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make the leaf directory 0700."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    return path


def write_private_file(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_or_create_secret(path: Path, nbytes: int = 32, prefix: str = "") -> str:
    """Return the secret stored in ``path``, creating it (0600) first if absent.

    Creation uses O_EXCL so two processes racing on one data dir agree on one value.
    """
    try:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = prefix + secrets.token_hex(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            existing = path.read_text(encoding="utf-8").strip()
            if existing:
                return existing
            import time

            time.sleep(0.02)
        raise
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    return value


def resolve_api_keys(data_dir: Path, explicit: list[str] | None) -> tuple[list[str], Path | None]:
    """Keys from ``explicit``, else ``$SOPHON_SERVER_API_KEYS``, else the data dir's key file.

    Returns the keys and, when the key file was used, its path (so it can be shown — never the key).
    """
    keys = [k.strip() for k in (explicit or []) if k and k.strip()]
    if keys:
        return keys, None
    env = os.environ.get(KEYS_ENV, "")
    keys = [k.strip() for k in env.split(",") if k.strip()]
    if keys:
        return keys, None
    ensure_private_dir(data_dir)
    path = data_dir / API_KEY_FILE
    return [read_or_create_secret(path, 24, prefix="sk_local_")], path
