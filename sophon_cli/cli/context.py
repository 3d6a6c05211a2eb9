"""Per-invocation state shared by all commands: global options, the Output, settings, the client.

Expensive things (settings, the HTTP client, the local server) are built on first use, with the
cyclic garbage collector paused (:func:`_building`): importing pydantic-settings, pydantic and
httpx allocates ~90,000 objects that live for the whole process, and the collector ran ~130 times
over them (30-40 ms of a command's start-up) finding almost nothing to free.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sophon_cli.cli.output import Output


@dataclass
class GlobalOptions:
    base_url: str | None = None
    profile: str | None = None
    json: bool = False
    quiet: bool = False
    verbose: int = 0  # -v 1, -vv 2
    no_progress: bool = False
    local: bool = False


@contextmanager
def _building() -> Iterator[None]:
    """Pause the cyclic GC while long-lived objects are built (restored after, even on error).
    What was built is then moved out of the collector's sight (``gc.freeze``): it lives as long
    as the process, and the next collections need not walk it again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()


@dataclass
class AppContext:
    options: GlobalOptions = field(default_factory=GlobalOptions)
    out: Output = field(default_factory=Output)
    _settings: Any = None
    _client: Any = None
    _resolved: tuple[str, str | None] | None = None

    @property
    def settings(self):
        if self._settings is None:
            with _building():
                from sophon_cli.settings import LOCAL, load_settings

                self._settings = load_settings(
                    base_url=LOCAL if self.options.local else self.options.base_url,
                    profile=self.options.profile,
                )
            from sophon_cli.cli.origins import note_settings  # a next step may say where a setting came from

            note_settings(
                self._settings,
                flags={
                    "base_url": self.options.base_url,
                    "profile": self.options.profile,
                    "local": self.options.local,
                },
            )
        return self._settings

    @property
    def is_local(self) -> bool:
        return self.settings.is_local

    def endpoint(self, *, need_key: bool = True) -> tuple[str, str | None]:
        """The (base_url, api_key) to talk to; starts the local server for ``--local``."""
        if self._resolved is None:
            s = self.settings
            if s.is_local:
                from sophon_cli.local import ensure_local_server

                url, key = ensure_local_server()
                self.out.debug(f"using the local server at {url}")
                self._resolved = (url, key)
            else:
                _check_scheme(str(s.base_url))
                key = _usable_key(s.api_key.get_secret_value()) if s.api_key is not None else None
                self._resolved = (s.base_url.rstrip("/"), key)
        url, key = self._resolved
        if need_key and not key:
            from sophon_cli.client.errors import NoKeyError

            raise NoKeyError()  # cli/hints.py words it: where a key was looked for, how to set one
        return url, key

    def client(self, *, need_key: bool = True):
        if self._client is None:
            url, key = self.endpoint(need_key=need_key)
            s = self.settings
            with _building():
                self._client = self._build_client(url, key, s)
            from sophon_cli.cli.verbose import attach

            attach(self._client, self.out, int(self.options.verbose))
        return self._client

    @staticmethod
    def _build_client(url: str, key: str | None, s: Any) -> Any:
        from sophon_cli.client.http import SophonClient

        return SophonClient(
            url,
            key,
            timeout=s.timeout,
            max_retries=s.max_retries,
            retry_budget=s.retry_budget,
            stall_seconds=s.stall_seconds,
            min_rate=s.min_rate * 1024,
        )

    @property
    def state_path(self) -> Path:
        from sophon_cli.settings import state_dir

        return state_dir() / "state.json"

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


def get_ctx(ctx: Any) -> AppContext:
    """The AppContext of a typer/click context (created on demand for direct calls)."""
    root = ctx.find_root() if ctx is not None else None
    if root is not None and isinstance(root.obj, AppContext):
        return root.obj
    app_ctx = AppContext()
    if root is not None:
        root.obj = app_ctx
    return app_ctx


def _usable_key(key: str) -> str | None:
    """The API key without the whitespace around it (a pasted or `$(cat file)`-read key can end in
    a newline or CR). One with a space or control character inside is a ConfigError (exit 4): it
    was sent as it was, failed as an "illegal header value" that read as a network error (exit 8)
    and quoted the key."""
    key = key.strip()
    if any(c.isspace() or not c.isprintable() for c in key):
        from sophon_cli.client.errors import ConfigError

        raise ConfigError(
            "the API key contains spaces or control characters",
            hint="check SOPHON_API_KEY, or store the key again with `sophon config set-key`",
        )
    return key or None


def _check_scheme(url: str) -> None:
    """A base URL that is not http(s) is bad input (exit 2), said before any request: it was a
    network error "cannot reach the SOPHON server at ftp://x" (exit 8) after the retries."""
    if url.lower().startswith(("http://", "https://")):
        return
    from sophon_cli.client.errors import InputError
    from sophon_cli.client.text import display_url

    raise InputError(
        f"the base URL {display_url(url)!r} does not start with http:// or https://",
        hint="fix --base-url, SOPHON_BASE_URL or the profile's base_url (`sophon config show` says "
        "which is used), or use --local for the local server",
    )
