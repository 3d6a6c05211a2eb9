"""Helpers shared by several commands: option checks, metadata and filters (the confirmation prompt
is ``cli/prompts.py``).

Option *definitions* (the typer ``Annotated`` types every command reuses) live in ``cli/options.py``;
this module holds what the commands do with the values. Nothing here renders API objects (that is
``cli/jobview.py`` for jobs) and nothing here talks to the server.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

MIN_CONCURRENCY = 1
MAX_CONCURRENCY = 16


# ---- metadata ---------------------------------------------------------------------------------


def _strict_json(text: str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(name)

    return json.loads(text, parse_constant=reject)


def parse_metadata_value(text: str) -> Any:
    """A --metadata value: the JSON value when ``text`` is valid JSON, else the string itself."""
    try:
        return _strict_json(text)
    except ValueError:
        return text


def split_pair(pair: str, option: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value); a missing ``=`` or key is one InputError line."""
    from sophon_cli.client.errors import InputError

    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise InputError(
            f"{option} expects KEY=VALUE (got {clip(pair)!r})", hint=f"e.g. {option} customer=acme"
        )
    return key.strip(), value


def build_metadata(
    pairs: list[str] | None, file_text: str | None, *, file_name: str = ""
) -> dict[str, Any] | None:
    """Merge --metadata-file (a JSON object) and KEY=VALUE pairs (pairs win); None when neither given.
    The result is checked by the library (a JSON object of at most 16 KiB)."""
    from sophon_cli.client.errors import InputError
    from sophon_cli.client.jobs import validate_metadata

    if not pairs and file_text is None:
        return None
    metadata: dict[str, Any] = {}
    if file_text is not None:
        try:
            loaded = _strict_json(file_text)
        except ValueError as exc:
            raise InputError(
                f"--metadata-file {file_name} is not valid JSON ({exc})", hint="fix the file"
            ) from None
        if not isinstance(loaded, dict):
            raise InputError(
                f"--metadata-file {file_name} must hold a JSON object, not {type(loaded).__name__}",
                hint='wrap the values in an object, e.g. {"key": "value"}',
            )
        metadata.update(loaded)
    for pair in pairs or []:
        key, value = split_pair(pair, "--metadata")
        metadata[key] = parse_metadata_value(value)
    return validate_metadata(metadata)


def metadata_filter(pairs: list[str] | None) -> dict[str, Any]:
    """``--metadata KEY=VALUE`` as a filter: KEY must equal VALUE (compared as JSON when it is JSON,
    else as text), every pair must match."""
    return {
        key: parse_metadata_value(value) for key, value in (split_pair(p, "--metadata") for p in pairs or [])
    }


def metadata_matches(metadata: Any, wanted: dict[str, Any]) -> bool:
    if not wanted:
        return True
    if not isinstance(metadata, dict):
        return False
    for key, value in wanted.items():
        if key not in metadata:
            return False
        have = metadata[key]
        if have != value and str(have) != str(value):
            return False
    return True


def clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- checks of option values -----------------------------------------------------------------


def check_height(height: int | None) -> int | None:
    from sophon_cli.client.errors import InputError
    from sophon_cli.client.jobs import MAX_TARGET_HEIGHT, MIN_TARGET_HEIGHT

    if height is not None and not MIN_TARGET_HEIGHT <= height <= MAX_TARGET_HEIGHT:
        raise InputError(
            f"--height must be between {MIN_TARGET_HEIGHT} and {MAX_TARGET_HEIGHT} pixels (got {height})",
            hint="e.g. --height 1080, or leave it out to keep the source size",
        )
    return height


def check_timeout(timeout: float | None) -> float | None:
    from sophon_cli.client.errors import InputError

    if timeout is not None and not timeout > 0:
        raise InputError(
            f"--timeout must be a positive number of seconds (got {timeout})", hint="e.g. --timeout 600"
        )
    return timeout


def check_state_file(path: Any) -> Any:
    """``--state-file`` (``encode``, ``cache``): a directory is a usage error before anything is
    created (the store made ``DIR.lock`` beside it, then failed with "Is a directory", exit 1)."""
    from sophon_cli.client.errors import InputError

    if path is not None and path.is_dir():
        raise InputError(
            f"--state-file {path} is a directory",
            hint=f"pass the cache file's path, e.g. {path / 'state.json'}",
        )
    return path


def check_concurrency(concurrency: int, option: str = "--concurrency") -> int:
    from sophon_cli.client.errors import InputError

    if not MIN_CONCURRENCY <= concurrency <= MAX_CONCURRENCY:
        raise InputError(
            f"{option} must be between {MIN_CONCURRENCY} and {MAX_CONCURRENCY} (got {concurrency})",
            hint=f"pick a smaller number, e.g. {option} 4",
        )
    return concurrency


def pick_concurrency(value: int, alias: int | None) -> int:
    """The value of ``-j/--concurrency``, or of its hidden old spelling when only that was given."""
    return value if alias is None else alias


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """``--since``: a duration back from now (``90s``, ``30m``, ``2h``, ``7d``, ``1w``) or an RFC 3339 /
    ISO date-time (a zone-less one is UTC). Returns an aware UTC datetime."""
    import re

    from sophon_cli.client.errors import InputError

    if text is None:
        return None
    raw = text.strip()
    now = now or datetime.now(timezone.utc)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", raw.lower())
    if m:
        try:
            return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
        except OverflowError:  # further back than the calendar goes: every job is newer
            return datetime.min.replace(tzinfo=timezone.utc)
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--since expects a duration or a date (got {clip(raw)!r})",
            hint="e.g. --since 2h, --since 7d or --since 2026-01-31T12:00:00Z",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


class Interrupted(Exception):
    """Ctrl-C in a command that knows the right next step: its message replaces the generic
    "interrupted; run the same command again" line (exit 130)."""
