"""User settings: command-line options > environment > config-file profile > defaults.

Environment: SOPHON_API_KEY, SOPHON_BASE_URL, SOPHON_PROFILE, SOPHON_HOME, and the tuning knobs
SOPHON_TIMEOUT (seconds a whole API request may take, connect to last byte), SOPHON_MAX_RETRIES,
SOPHON_RETRY_BUDGET (seconds), SOPHON_STALL_SECONDS and SOPHON_MIN_RATE (a streamed download fails,
and resumes on the next try, when fewer than MIN_RATE KiB/s arrived over STALL_SECONDS).
Config file: ``$SOPHON_HOME/config.toml`` or ``<user config dir>/sophon/config.toml``::

    [profiles.default]
    base_url = "https://api.liqhtworks.xyz"
    api_key = "xt_live_..."        # written by `sophon config set-key`, file mode 0600

    [profiles.staging]
    base_url = "https://staging.example"

``SOPHON_BASE_URL=local`` (or ``--local``) means the embedded local server.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

DEFAULT_BASE_URL = "https://api.liqhtworks.xyz"
DEFAULT_PROFILE = "default"
LOCAL = "local"
#: keys `sophon config set` accepts (the API key has its own command so it never sits in argv)
SETTABLE_KEYS = {
    "base_url": str,
    "timeout": float,
    "max_retries": int,
    "retry_budget": float,
    "stall_seconds": float,
    "min_rate": float,
}
_FILE_KEYS = ("api_key", *SETTABLE_KEYS)


def sophon_home() -> Path | None:
    home = os.environ.get("SOPHON_HOME")
    return Path(home).expanduser() if home else None


def config_dir() -> Path:
    home = sophon_home()
    if home is not None:
        return home
    import platformdirs

    return Path(platformdirs.user_config_dir("sophon", appauthor=False))


def state_dir() -> Path:
    home = sophon_home()
    if home is not None:
        return home
    import platformdirs

    return Path(platformdirs.user_state_dir("sophon", appauthor=False))


def config_path() -> Path:
    return config_dir() / "config.toml"


def _load_toml(path: Path) -> dict[str, Any]:
    from sophon_cli.client.errors import ConfigError, ConfigFileError

    try:
        with path.open("rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {}  # (before importing the TOML parser: most runs have no config file)
    except IsADirectoryError:
        raise ConfigFileError(
            f"{path} is a directory, not a TOML file", path=str(path), hint="remove it"
        ) from None
    except PermissionError as exc:
        raise ConfigError(
            f"cannot read config file {path}: permission denied", hint="fix its permissions"
        ) from exc
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 in CI
        import tomli as tomllib
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigFileError(
            f"{path} line {line}: not valid TOML (not UTF-8 text)",
            path=str(path),
            line=line,
            hint="fix it by hand or delete it",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        detail = str(exc)
        if line is None:
            m = re.search(r"\(at line (\d+)", detail)
            line = int(m.group(1)) if m else None
        where = f"{path} line {line}" if line else str(path)
        reason = getattr(exc, "msg", None) or re.sub(r"\s*\(at (line|end of document).*\)$", "", detail)
        raise ConfigFileError(
            f"{where}: not valid TOML ({reason})",
            path=str(path),
            line=line,
            hint="fix it by hand or delete it",
        ) from None


def read_config(path: Path | None = None) -> dict[str, Any]:
    return _load_toml(path or config_path())


def profile_values(profile: str, path: Path | None = None, *, must_exist: bool = False) -> dict[str, Any]:
    """The values of ``profile`` in the config file; ``must_exist``: a profile that is not there is
    a ConfigFileError ("profile 'NAME' not found")."""
    from sophon_cli.client.errors import ConfigFileError

    path = path or config_path()
    data = read_config(path)
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigFileError(
            f"{path}: 'profiles' must be a table of profiles", path=str(path), hint="fix it by hand"
        )
    values = profiles.get(profile)
    if values is None:
        if must_exist:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigFileError(
                f"profile '{profile}' not found in {path} (profiles: {known})",
                path=str(path),
                hint="check the profile name, or set a value in that profile first",
            )
        return {}
    if not isinstance(values, dict):
        raise ConfigFileError(
            f"{path}: profile '{profile}' must be a table", path=str(path), hint="fix it by hand"
        )
    return dict(values)


def redacted_url(url: str) -> str:
    """``url`` with the password of its userinfo (``https://user:PASSWORD@host``) masked."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    masked = f"{user}:****" if ":" in userinfo else ("****" if user else "")
    return urlunsplit(parts._replace(netloc=f"{masked}@{hostport}"))


def update_config(profile: str, updates: dict[str, Any], path: Path | None = None) -> Path:
    import tomli_w

    path = path or config_path()
    data = read_config(path)
    profiles = data.setdefault("profiles", {})
    section = profiles.setdefault(profile, {})
    for key, value in updates.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    from sophon_cli.client.files import write_private_file

    write_private_file(path, tomli_w.dumps(data).encode(), private_dir=True)
    return path


def load_settings(**cli: Any):
    """Build the effective :class:`Settings`. ``cli`` holds command-line values (None = not given)."""
    from pydantic import Field, SecretStr, ValidationError
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

    explicit = cli.get("profile") or os.environ.get("SOPHON_PROFILE") or None
    profile = explicit or DEFAULT_PROFILE
    # a profile asked for by name must exist (the default one may be absent: defaults then)
    file_values = profile_values(profile, must_exist=explicit is not None and explicit != DEFAULT_PROFILE)

    class _ProfileSource(PydanticBaseSettingsSource):
        def get_field_value(self, field, field_name):  # pragma: no cover - required by the ABC
            return None, field_name, False

        def __call__(self) -> dict[str, Any]:
            return {k: v for k, v in file_values.items() if k in _FILE_KEYS}

    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="SOPHON_", extra="ignore")

        api_key: SecretStr | None = None
        base_url: str = DEFAULT_BASE_URL
        profile: str = DEFAULT_PROFILE
        timeout: float = Field(30.0, gt=0)
        max_retries: int = Field(5, ge=0)
        retry_budget: float = Field(120.0, ge=0)
        stall_seconds: float = Field(30.0, gt=0)
        min_rate: float = Field(1.0, ge=0)  # KiB/s

        @classmethod
        def settings_customise_sources(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):
            return (init_settings, env_settings, _ProfileSource(settings_cls))

        @property
        def is_local(self) -> bool:
            return self.base_url.strip().lower() == LOCAL

        @property
        def redacted_base_url(self) -> str:
            """The base URL safe to show: a password in its userinfo is masked."""
            return redacted_url(self.base_url)

        def __repr_args__(self):  # never show the key (even redacted by pydantic) or a URL password
            for name, value in super().__repr_args__():
                if name == "base_url":
                    yield name, redacted_url(str(value))
                elif name != "api_key":
                    yield name, value

    init = {k: v for k, v in cli.items() if v is not None and k in _FILE_KEYS}
    init["profile"] = profile
    try:
        settings = Settings(**init)
    except ValidationError as exc:
        raise _settings_error(exc, file_values) from None
    if settings.api_key is not None:  # a key read with its line ending (`$(cat key.txt)` of a CRLF file)
        key = settings.api_key.get_secret_value().strip()
        settings.api_key = SecretStr(key) if key else None
    return settings


def _settings_error(exc: Any, file_values: dict[str, Any]) -> Exception:
    from sophon_cli.client.errors import ConfigFileError, InputError

    first = exc.errors()[0]
    name = str(first["loc"][0]) if first.get("loc") else "a setting"
    value = first.get("input")
    reason = first.get("msg", "invalid")
    env = f"SOPHON_{name.upper()}"
    if env in os.environ:
        return InputError(f"{env}={os.environ[env]!r}: {reason}", hint=f"fix or unset {env}")
    if name in file_values:
        path = config_path()
        return ConfigFileError(
            f"{path}: {name} = {value!r}: {reason}",
            path=str(path),
            hint="fix it by hand or with the config command",
        )
    return InputError(f"{name} = {value!r}: {reason}")


def redact(secret: str | None) -> str:
    if not secret:
        return "(not set)"
    return f"****{secret[-4:]}" if len(secret) >= 16 else "****"
