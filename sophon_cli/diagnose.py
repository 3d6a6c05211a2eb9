"""`sophon doctor`'s checks, as data: config, profile, settings, API key, reachability, readiness,
the key accepted, clock skew against the server's ``Date`` (webhook signatures allow 300 s),
ffmpeg for the local features, the state directory and the webhook secrets file.

:func:`run` returns a :class:`Report` of :class:`Check` lines (ok / warn / fail, with a :class:`Fix`
the front end words); it never prints, never raises for what it diagnoses and never imports the
CLI. Every request is one attempt bounded by ``timeout``; nothing is written except a probe file
(created and removed at once) in the state directory.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: skew above which signatures start to fail (the verifier's tolerance) and a margin below it
SKEW_FAIL = 300.0
SKEW_WARN = 30.0
DEFAULT_TIMEOUT = 10.0


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


class Fix(str, enum.Enum):
    """What to do about a warn/fail line (worded by the front end)."""

    FIX_CONFIG = "fix_config"
    MISSING_PROFILE = "missing_profile"
    FIX_SETTINGS = "fix_settings"
    SET_KEY = "set_key"
    CHECK_KEY = "check_key"
    CHECK_URL = "check_url"
    NOT_READY = "not_ready"
    SYNC_CLOCK = "sync_clock"
    INSTALL_FFMPEG = "install_ffmpeg"
    STATE_DIR = "state_dir"
    SECRETS_FILE = "secrets_file"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: Fix | None = None


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, name: str, status: Status, detail: str, fix: Fix | None = None) -> Check:
        check = Check(name, status, detail, fix if status is not Status.OK else None)
        self.checks.append(check)
        return check


def run(
    *,
    base_url: str | None = None,
    profile: str | None = None,
    local: bool = False,
    timeout: float | None = None,
    ensure_local: Callable[[], tuple[str, str]] | None = None,
    clock: Callable[[], float] = time.time,
) -> Report:
    """Run every check. ``base_url`` / ``profile`` / ``local`` are the command-line values (None =
    not given); ``ensure_local`` finds or starts the local server (default: ``sophon_cli.local``)."""
    from sophon_cli.settings import DEFAULT_PROFILE, LOCAL

    report = Report()
    chosen = profile or os.environ.get("SOPHON_PROFILE") or DEFAULT_PROFILE
    _check_config(report, chosen, explicit=bool(profile or os.environ.get("SOPHON_PROFILE")))
    settings = _check_settings(report, base_url=LOCAL if local else base_url, profile=profile)
    if settings is not None:
        _check_server(report, settings, timeout=timeout, ensure_local=ensure_local, clock=clock)
    _check_ffmpeg(report, needed=bool(settings is not None and settings.is_local))
    _check_state_dir(report)
    _check_secrets_file(report)
    return report


# ---- local configuration ---------------------------------------------------------------------


def _check_config(report: Report, profile: str, *, explicit: bool) -> None:
    from sophon_cli.client.errors import ConfigError
    from sophon_cli.settings import config_path, read_config

    path = config_path()
    try:
        exists = path.is_file()
        data = read_config(path) if exists else {}
    except ConfigError as exc:
        report.add("config", Status.FAIL, str(exc), Fix.FIX_CONFIG)
        return
    except OSError as exc:
        report.add("config", Status.FAIL, f"cannot read {path}: {exc.strerror or exc}", Fix.FIX_CONFIG)
        return
    if not exists:
        report.add("config", Status.OK, f"no config file at {path} (environment and defaults only)")
    else:
        report.add("config", Status.OK, f"{path} parsed")
    profiles = data.get("profiles", {}) if isinstance(data.get("profiles", {}), dict) else {}
    if profile in profiles:
        report.add("profile", Status.OK, f"{profile!r} found in {path}")
    elif explicit:
        known = ", ".join(sorted(profiles)) or "none"
        report.add(
            "profile", Status.FAIL, f"profile {profile!r} not found (profiles: {known})", Fix.MISSING_PROFILE
        )
    else:
        report.add("profile", Status.OK, f"{profile!r} (not in the config file: defaults apply)")


def _check_settings(report: Report, *, base_url: str | None, profile: str | None) -> Any:
    from sophon_cli.settings import load_settings

    try:
        settings = load_settings(base_url=base_url, profile=profile)
    except Exception as exc:  # pydantic ValidationError, ConfigError: both name the bad value
        text = " ".join(str(exc).split())
        report.add("settings", Status.FAIL, f"cannot load the settings: {text[:200]}", Fix.FIX_SETTINGS)
        return None
    url = settings.base_url.strip()
    if not settings.is_local and not url.lower().startswith(("http://", "https://")):
        report.add("settings", Status.FAIL, f"base URL {url!r} is not an http(s) URL", Fix.FIX_SETTINGS)
        return None
    return settings


# ---- the server ------------------------------------------------------------------------------


def _check_server(
    report: Report,
    settings: Any,
    *,
    timeout: float | None,
    ensure_local: Callable[[], tuple[str, str]] | None,
    clock: Callable[[], float],
) -> None:
    from sophon_cli.client.errors import SophonError
    from sophon_cli.client.http import SophonClient
    from sophon_cli.setting_sources import mask_url
    from sophon_cli.settings import redact

    if settings.is_local:
        try:
            if ensure_local is None:
                from sophon_cli.local import ensure_local_server as ensure_local
            url, key = ensure_local()
        except (SophonError, OSError) as exc:
            report.add("base url", Status.FAIL, f"the local server did not start: {exc}", Fix.CHECK_URL)
            return
        report.add("api key", Status.OK, f"{redact(key)} (the local server's key)")
    else:
        url = settings.base_url.strip().rstrip("/")
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        if key:
            where = "SOPHON_API_KEY" if os.environ.get("SOPHON_API_KEY", "").strip() else "the config file"
            report.add("api key", Status.OK, f"{redact(key)} (from {where})")
        else:
            report.add("api key", Status.FAIL, "no API key is set", Fix.SET_KEY)
    shown = mask_url(url)
    limit = min(float(timeout or settings.timeout or DEFAULT_TIMEOUT), DEFAULT_TIMEOUT)
    with SophonClient(
        url, None, timeout=limit, connect_timeout=limit, max_retries=0, retry_budget=0
    ) as probe:
        try:
            started = clock()
            response = probe.request("GET", "/healthz", expect=None, retry=False)
            ended = clock()
        except SophonError as exc:  # TransportError names the URL (without userinfo)
            report.add("base url", Status.FAIL, _reason(exc), Fix.CHECK_URL)
            return
        ms = (ended - started) * 1000
        if not 200 <= response.status_code < 300:
            report.add(
                "base url",
                Status.FAIL,
                f"{shown} /healthz answered HTTP {response.status_code}",
                Fix.CHECK_URL,
            )
        else:
            report.add("base url", Status.OK, f"{shown} reachable ({ms:.0f} ms)")
        _check_clock(report, response.headers.get("Date"), (started + ended) / 2)
        try:
            ready = probe.readyz()
        except SophonError as exc:
            report.add("readyz", Status.FAIL, f"/readyz failed ({_reason(exc)})", Fix.NOT_READY)
        else:
            if ready.ready:
                report.add("readyz", Status.OK, "ready")
            else:
                failed = ", ".join(ready.checks_failed) or "no reason given"
                report.add("readyz", Status.FAIL, f"not ready: {failed}", Fix.NOT_READY)
    if key:
        _check_auth(report, url, key, limit)


def _check_auth(report: Report, url: str, key: str, limit: float) -> None:
    from sophon_cli.client.errors import AuthError, KeyRejectedError, SophonError
    from sophon_cli.client.http import SophonClient

    with SophonClient(
        url, key, timeout=limit, connect_timeout=limit, max_retries=0, retry_budget=0
    ) as client:
        try:
            client.jobs.list(limit=1)
        except KeyRejectedError as exc:  # the server's 401 text is about headers, not about the setup
            report.add(
                "auth",
                Status.FAIL,
                f"the server rejected the key (HTTP {exc.status} {exc.code})",
                Fix.CHECK_KEY,
            )
        except AuthError as exc:
            report.add("auth", Status.FAIL, f"the key was rejected ({_reason(exc)})", Fix.CHECK_KEY)
        except SophonError as exc:
            report.add("auth", Status.WARN, f"could not check the key ({_reason(exc)})", Fix.CHECK_URL)
        else:
            report.add("auth", Status.OK, "the key is accepted")


def _check_clock(report: Report, date_header: str | None, local_time: float) -> None:
    from email.utils import parsedate_to_datetime

    if not date_header:
        report.add(
            "clock", Status.WARN, "the server sent no Date header: clocks not compared", Fix.SYNC_CLOCK
        )
        return
    try:
        server_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        report.add("clock", Status.WARN, "the server's Date header is not a date", Fix.SYNC_CLOCK)
        return
    skew = local_time - server_time
    where = "ahead of" if skew > 0 else "behind"
    text = f"this clock is {abs(skew):.0f}s {where} the server's"
    if abs(skew) >= SKEW_FAIL:
        report.add(
            "clock", Status.FAIL, f"{text}: webhook signatures (300 s tolerance) will fail", Fix.SYNC_CLOCK
        )
    elif abs(skew) >= SKEW_WARN:
        report.add("clock", Status.WARN, text, Fix.SYNC_CLOCK)
    else:
        report.add("clock", Status.OK, f"within {max(abs(skew), 1):.0f}s of the server's")


def _reason(exc: BaseException) -> str:
    from sophon_cli.client.text import safe_field

    status = getattr(exc, "status", None)
    text = safe_field(exc, limit=160)
    return f"HTTP {status}: {text}" if status else text


# ---- local tools and files ---------------------------------------------------------------------


def _check_ffmpeg(report: Report, *, needed: bool) -> None:
    import subprocess

    missing = Status.FAIL if needed else Status.WARN
    try:
        import imageio_ffmpeg
    except ImportError:
        report.add(
            "ffmpeg", missing, "imageio-ffmpeg is not installed (local server, compare)", Fix.INSTALL_FFMPEG
        )
        return
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        version = subprocess.run(
            [exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=20
        )
        encoders = subprocess.run(
            [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20
        )
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        report.add("ffmpeg", missing, f"ffmpeg cannot run ({exc})", Fix.INSTALL_FFMPEG)
        return
    words = (version.stdout.splitlines() or ["ffmpeg"])[0].split()
    name = f"ffmpeg {words[2]}" if len(words) > 2 and words[1] == "version" else "ffmpeg"
    if "libx265" not in encoders.stdout:
        report.add(
            "ffmpeg",
            missing,
            f"{name} has no libx265 encoder (the local server needs it)",
            Fix.INSTALL_FFMPEG,
        )
    else:
        report.add("ffmpeg", Status.OK, f"{name} with libx265 ({exe})")


def _check_state_dir(report: Report) -> None:
    from sophon_cli.settings import state_dir

    path = state_dir()
    try:
        if path.exists() and not path.is_dir():
            report.add("state dir", Status.FAIL, f"{path} is not a directory", Fix.STATE_DIR)
            return
        if not path.exists():
            parent = _existing_parent(path)
            if not parent.is_dir():
                report.add(
                    "state dir", Status.FAIL, f"{parent} (in {path}) is not a directory", Fix.STATE_DIR
                )
            elif os.access(parent, os.W_OK | os.X_OK):
                report.add("state dir", Status.OK, f"{path} (created on first use)")
            else:
                report.add("state dir", Status.FAIL, f"{parent} is not writable", Fix.STATE_DIR)
            return
        probe = path / f".doctor.{os.getpid()}.probe"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        report.add("state dir", Status.FAIL, f"{path} is not writable ({exc.strerror or exc})", Fix.STATE_DIR)
        return
    report.add("state dir", Status.OK, f"{path} writable")


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def _check_secrets_file(report: Report) -> None:
    from sophon_cli.webhooks.secret_store import SecretStore, SecretStoreError

    store = SecretStore()
    try:
        saved = store.secrets()
    except SecretStoreError as exc:
        report.add("webhook secrets", Status.WARN, str(exc), Fix.SECRETS_FILE)
        return
    if not store.path.exists():
        report.add("webhook secrets", Status.OK, "none saved")
    else:
        report.add("webhook secrets", Status.OK, f"{len(saved)} saved in {store.path}")
