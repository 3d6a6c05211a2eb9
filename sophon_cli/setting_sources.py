"""Where each effective setting comes from: a command-line option, the environment, the config
file's profile, or the default (the precedence of :func:`sophon_cli.settings.load_settings`).

Values are display-safe: the API key is masked and a password in the base URL's userinfo is
replaced by ``****``. Never imports the CLI.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "SOPHON_"
FIELDS = (
    "profile",
    "base_url",
    "api_key",
    "timeout",
    "max_retries",
    "retry_budget",
    "stall_seconds",
    "min_rate",
)


class Source(str, enum.Enum):
    FLAG = "flag"
    ENV = "env"
    FILE = "file"
    DEFAULT = "default"


@dataclass(frozen=True)
class SettingValue:
    name: str
    value: object  # display-safe: the key masked, the URL's userinfo masked; numbers stay numbers
    source: Source
    origin: str  # the environment variable, option or file it came from ("" for defaults)


def mask_url(url: str) -> str:
    """``url`` with any userinfo (a user name can be a token, too) replaced by ``****``."""
    from urllib.parse import urlsplit, urlunsplit

    from sophon_cli.client.text import redact

    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if "@" not in parts.netloc:
        return redact(url)
    hostport = parts.netloc.rpartition("@")[2]
    return redact(urlunsplit(parts._replace(netloc=f"****@{hostport}")))


def _env_name(name: str) -> str | None:
    """The environment variable that sets ``name`` (matched case-insensitively, as pydantic does)."""
    if name in os.environ:
        return name
    return next((k for k in os.environ if k.upper() == name), None)


def describe(settings: Any, *, flags: dict[str, Any], config_file: os.PathLike | str) -> list[SettingValue]:
    """One :class:`SettingValue` per field of ``settings`` (a loaded Settings), given the
    command-line values (``flags``: name -> value or None) and the config file path."""
    from sophon_cli.settings import profile_values, redact

    profile = settings.profile
    try:
        in_file = profile_values(profile)
    except Exception:  # an unreadable config file is reported by load_settings / doctor
        in_file = {}
    result: list[SettingValue] = []
    for name in FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if flags.get(name) is not None:
            source, origin = Source.FLAG, "--" + name.replace("_", "-")
        elif _env_name(env_name) is not None:
            source, origin = Source.ENV, _env_name(env_name)
        elif name != "profile" and name in in_file:
            source, origin = Source.FILE, f"{config_file} [profiles.{profile}]"
        else:
            source, origin = Source.DEFAULT, ""
        raw = getattr(settings, name)
        if name == "api_key":
            value = redact(raw.get_secret_value() if raw is not None else None)
        elif name == "base_url":
            value = mask_url(str(raw))
        else:
            value = raw
        if name == "base_url" and flags.get("local"):
            source, origin = Source.FLAG, "--local"
        result.append(SettingValue(name, value, source, origin))
    return result
