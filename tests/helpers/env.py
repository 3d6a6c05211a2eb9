"""The environment a test hands to a child process: the one place that decides what a ``sophon``
subprocess (or a linter the tests run) inherits from the developer's shell.

- ``child_env(extra=None, **more)`` the shell's environment without ``SOPHON_*`` settings (test-suite
  knobs such as ``SOPHON_STRESS_FULL`` stay) and without GitHub tokens, unbuffered Python output;
  ``extra``/``more`` are applied last, a value of ``None`` removes the variable
- ``cli_env(server=None, home=None, extra=None, **more)`` the above plus ``SOPHON_HOME`` (and an
  ``XDG_CONFIG_HOME`` under it) when ``home`` is given, and ``SOPHON_BASE_URL``/``SOPHON_API_KEY``
  for ``server`` (a LocalServer, or a base URL string that gets the suite's test key)
- ``isolated_home(tmp_path, monkeypatch)`` this process's settings isolated too: the shell's
  key, URL, profile and timeout unset, ``SOPHON_HOME`` pointed at ``tmp_path/home`` (returned)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TEST_KEY = "test-key-0123456789"
SETTINGS_KEY = "xt_test_0123456789abcdef"  # an API key the settings tests store and look for

# Variables named SOPHON_* that configure the test suite itself, not the CLI.
SUITE_KNOBS = frozenset({"SOPHON_STRESS_FULL"})
# Credentials a child never needs (secrets never in a child's environment).
TOKENS = ("GITHUB_TOKEN", "GH_TOKEN")


def _apply(env: dict[str, str], extra: Mapping[str, object] | None) -> None:
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)


def child_env(extra: Mapping[str, object] | None = None, **more: object) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("SOPHON_") and k not in SUITE_KNOBS) and k not in TOKENS
    }
    env["PYTHONUNBUFFERED"] = "1"
    _apply(env, extra)
    _apply(env, more)
    return env


def cli_env(
    server=None,
    home: str | os.PathLike | None = None,
    extra: Mapping[str, object] | None = None,
    **more: object,
) -> dict[str, str]:
    env = child_env()
    if home is not None:
        env["SOPHON_HOME"] = str(home)
        env["XDG_CONFIG_HOME"] = str(Path(home) / "xdg-config")
    if server is not None:
        if isinstance(server, str):
            env["SOPHON_BASE_URL"], env["SOPHON_API_KEY"] = server, TEST_KEY
        else:
            env["SOPHON_BASE_URL"], env["SOPHON_API_KEY"] = server.url, server.api_keys[0]
    _apply(env, extra)
    _apply(env, more)
    return env


def isolated_home(tmp_path: Path, monkeypatch) -> Path:
    for var in ("SOPHON_API_KEY", "SOPHON_BASE_URL", "SOPHON_PROFILE", "SOPHON_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("SOPHON_HOME", str(home))
    return home
