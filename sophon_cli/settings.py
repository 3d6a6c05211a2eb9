"""User settings: command-line options > environment > config-file profile > defaults.

Environment: SOPHON_API_KEY, SOPHON_BASE_URL, SOPHON_PROFILE, SOPHON_HOME, and the tuning knobs
SOPHON_TIMEOUT (seconds per request), SOPHON_MAX_RETRIES and SOPHON_RETRY_BUDGET (seconds).
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
import stat
import sys
from pathlib import Path
from typing import Any

DEFAULT_BASE_URL = "https://api.liqhtworks.xyz"
DEFAULT_PROFILE = "default"
LOCAL = "local"
#: keys `sophon config set` accepts (the API key has its own command so it never sits in argv)
SETTABLE_KEYS = {"base_url": str, "timeout": float, "max_retries": int, "retry_budget": float}
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
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 in CI
        import tomli as tomllib
    from sophon_cli.client.errors import ConfigError

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except PermissionError as exc:
        raise ConfigError(
            f"cannot read config file {path}: permission denied", hint="fix its permissions"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML ({exc})", hint="fix it by hand or delete it"
        ) from exc


def read_config(path: Path | None = None) -> dict[str, Any]:
    return _load_toml(path or config_path())


def profile_values(profile: str, path: Path | None = None) -> dict[str, Any]:
    data = read_config(path)
    profiles = data.get("profiles", {})
    values = profiles.get(profile, {}) if isinstance(profiles, dict) else {}
    return dict(values) if isinstance(values, dict) else {}


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, stat.S_IRWXU)


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600 inside a 0700 directory."""
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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
    write_private_file(path, tomli_w.dumps(data).encode())
    return path


def load_settings(**cli: Any):
    """Build the effective :class:`Settings`. ``cli`` holds command-line values (None = not given)."""
    from pydantic import SecretStr
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

    profile = cli.get("profile") or os.environ.get("SOPHON_PROFILE") or DEFAULT_PROFILE

    class _ProfileSource(PydanticBaseSettingsSource):
        def get_field_value(self, field, field_name):  # pragma: no cover - required by the ABC
            return None, field_name, False

        def __call__(self) -> dict[str, Any]:
            values = profile_values(profile)
            return {k: v for k, v in values.items() if k in _FILE_KEYS}

    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="SOPHON_", extra="ignore")

        api_key: SecretStr | None = None
        base_url: str = DEFAULT_BASE_URL
        profile: str = DEFAULT_PROFILE
        timeout: float = 30.0
        max_retries: int = 5
        retry_budget: float = 120.0

        @classmethod
        def settings_customise_sources(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):
            return (init_settings, env_settings, _ProfileSource(settings_cls))

        @property
        def is_local(self) -> bool:
            return self.base_url.strip().lower() == LOCAL

        def __repr_args__(self):  # never show the key, even redacted by pydantic
            for name, value in super().__repr_args__():
                if name != "api_key":
                    yield name, value

    init = {k: v for k, v in cli.items() if v is not None and k in _FILE_KEYS}
    init["profile"] = profile
    settings = Settings(**init)
    if settings.api_key is not None and not settings.api_key.get_secret_value().strip():
        settings.api_key = None
    return settings


def redact(secret: str | None) -> str:
    if not secret:
        return "(not set)"
    return f"****{secret[-4:]}" if len(secret) >= 16 else "****"
