"""Where this command's settings came from (a flag, the environment, the config file's profile, the
local server), in the words a next step uses: ``set by SOPHON_BASE_URL``, ``profile 'work' in
~/.config/sophon/config.toml``. Never the API key itself.

The command's context notes its settings (:func:`note_settings`) when it loads them; nothing is
read until an error's next step asks (``cli/hints.py``).
"""

from __future__ import annotations

_SETTINGS: tuple[object, dict[str, object]] | None = None


def note_settings(settings: object, *, flags: dict[str, object]) -> None:
    """Remember the command's effective settings and its command-line values, so that a next step
    can say where a setting came from (``SOPHON_BASE_URL``, the profile in the config file, ...).
    Nothing is read until an error needs it."""
    global _SETTINGS
    _SETTINGS = (settings, dict(flags))


def setting_origin(name: str):
    """The :class:`~sophon_cli.setting_sources.SettingValue` of setting ``name`` of this command,
    None when no settings were noted (or they cannot be described)."""
    if _SETTINGS is None:
        return None
    from sophon_cli.setting_sources import describe
    from sophon_cli.settings import config_path

    settings, flags = _SETTINGS
    try:
        values = describe(settings, flags=flags, config_file=config_path())
    except Exception:  # describing is best effort: the next step still has its words
        return None
    return next((v for v in values if v.name == name), None)


def profile() -> str:
    return str(getattr(_SETTINGS[0], "profile", "default")) if _SETTINGS is not None else "default"


def key_origin() -> tuple[str, str]:
    """(kind, words) of where this command's API key came from: kind is ``env``, ``file``,
    ``local``, ``none`` or ``unknown`` (no settings noted)."""
    from sophon_cli.setting_sources import Source

    if _SETTINGS is None:
        return "unknown", ""
    if getattr(_SETTINGS[0], "is_local", False):
        return "local", "the local server's key file"
    origin = setting_origin("api_key")
    if origin is None:
        return "unknown", ""
    if origin.source == Source.ENV:
        return "env", origin.origin
    if origin.source == Source.FILE:
        from sophon_cli.settings import config_path

        return "file", f"profile {profile()!r} in {config_path()}"
    return "none", ""


def server_words() -> str:
    """``the server at URL`` (the base URL, its userinfo masked), or ``the server``."""
    settings = _SETTINGS[0] if _SETTINGS is not None else None
    if settings is None or getattr(settings, "is_local", False):
        return "the server"
    return f"the server at {getattr(settings, 'redacted_base_url', '') or 'its base URL'}"


def default_base_url() -> bool:
    from sophon_cli.setting_sources import Source

    origin = setting_origin("base_url")
    return origin is not None and origin.source == Source.DEFAULT


def base_url_origin() -> str:
    """Where the base URL came from, as words for a next step."""
    from sophon_cli.setting_sources import Source

    origin = setting_origin("base_url")
    if origin is None:
        return "--base-url, SOPHON_BASE_URL or the profile's base_url; `sophon config show` says which"
    if origin.source == Source.FLAG:
        return f"given with {origin.origin}"
    if origin.source == Source.ENV:
        return f"set by {origin.origin}"
    if origin.source == Source.FILE:
        from sophon_cli.settings import config_path

        return f"base_url of profile {profile()!r} in {config_path()}"
    return "the default; choose another with --base-url or SOPHON_BASE_URL"


def timeout() -> float | None:
    """The request timeout of this command's settings (None when none were noted)."""
    value = getattr(_SETTINGS[0], "timeout", None) if _SETTINGS is not None else None
    return float(value) if isinstance(value, (int, float)) else None
