"""tests/helpers/env.py: what a child process of the tests inherits."""

from __future__ import annotations

from types import SimpleNamespace

from tests.helpers.env import TEST_KEY, child_env, cli_env


def test_the_shells_sophon_settings_and_tokens_stay_out(monkeypatch):
    monkeypatch.setenv("SOPHON_API_KEY", "from-the-shell")
    monkeypatch.setenv("SOPHON_DEBUG", "1")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("SOPHON_STRESS_FULL", "1")
    env = child_env()
    assert "SOPHON_API_KEY" not in env and "SOPHON_DEBUG" not in env and "GITHUB_TOKEN" not in env
    assert env["SOPHON_STRESS_FULL"] == "1"  # a knob of the suite, not a CLI setting
    assert env["PYTHONUNBUFFERED"] == "1"


def test_cli_env_points_at_the_server_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_ME", "x")
    server = SimpleNamespace(url="http://127.0.0.1:9", api_keys=["k-1"])
    env = cli_env(server, tmp_path / "h", {"KEEP_ME": None, "A": 1}, B="2")
    assert env["SOPHON_BASE_URL"] == "http://127.0.0.1:9" and env["SOPHON_API_KEY"] == "k-1"
    assert env["SOPHON_HOME"] == str(tmp_path / "h")
    assert env["XDG_CONFIG_HOME"] == str(tmp_path / "h" / "xdg-config")
    assert "KEEP_ME" not in env and env["A"] == "1" and env["B"] == "2"
    assert cli_env("http://127.0.0.1:8")["SOPHON_API_KEY"] == TEST_KEY
