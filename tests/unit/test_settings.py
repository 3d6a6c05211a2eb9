"""Settings precedence (options > env > config profile > defaults) and private config files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from sophon_cli.settings import DEFAULT_BASE_URL, load_settings, redact, update_config
from tests.helpers.env import cli_env

KEY = "xt_test_0123456789abcdef"


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("SOPHON_API_KEY", "SOPHON_BASE_URL", "SOPHON_PROFILE", "SOPHON_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    h = tmp_path / "home"
    monkeypatch.setenv("SOPHON_HOME", str(h))
    return h


def test_defaults(home):
    s = load_settings()
    assert s.base_url == DEFAULT_BASE_URL
    assert s.api_key is None
    assert s.profile == "default"


def test_config_profile_beats_defaults(home):
    update_config("default", {"base_url": "https://from-config.example", "api_key": "cfgkey"})
    s = load_settings()
    assert s.base_url == "https://from-config.example"
    assert s.api_key.get_secret_value() == "cfgkey"


def test_env_beats_config(home, monkeypatch):
    update_config("default", {"base_url": "https://from-config.example", "api_key": "cfgkey"})
    monkeypatch.setenv("SOPHON_BASE_URL", "https://from-env.example")
    monkeypatch.setenv("SOPHON_API_KEY", "envkey")
    s = load_settings()
    assert s.base_url == "https://from-env.example"
    assert s.api_key.get_secret_value() == "envkey"


def test_option_beats_env(home, monkeypatch):
    monkeypatch.setenv("SOPHON_BASE_URL", "https://from-env.example")
    s = load_settings(base_url="https://from-option.example")
    assert s.base_url == "https://from-option.example"


def test_named_profile_from_env_and_option(home, monkeypatch):
    update_config("staging", {"base_url": "https://staging.example"})
    update_config("prod", {"base_url": "https://prod.example"})
    monkeypatch.setenv("SOPHON_PROFILE", "staging")
    assert load_settings().base_url == "https://staging.example"
    assert load_settings(profile="prod").base_url == "https://prod.example"


def test_local_is_recognised(home):
    assert load_settings(base_url="local").is_local
    assert not load_settings().is_local


def test_config_file_is_0600_in_0700_dir(home):
    path = update_config("default", {"api_key": KEY})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_repr_never_shows_the_key(home, monkeypatch):
    monkeypatch.setenv("SOPHON_API_KEY", KEY)
    s = load_settings()
    assert KEY not in repr(s) and KEY not in str(s)
    assert KEY not in redact(KEY) and redact(KEY).endswith(KEY[-4:])


def test_bad_toml_is_a_config_error(home):
    from sophon_cli.client.errors import ConfigError

    home.mkdir(parents=True)
    (home / "config.toml").write_text("[profiles.default\nbase_url=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()


def _sophon(home, *args, input=None, env=None):
    e = cli_env(home=home, extra=env)
    return subprocess.run(
        [sys.executable, "-m", "sophon_cli", *args],
        input=input,
        capture_output=True,
        text=True,
        env=e,
        timeout=60,
    )


def test_set_key_reads_stdin_and_show_redacts(home):
    r = _sophon(home, "config", "set-key", input=KEY + "\n")
    assert r.returncode == 0, r.stderr
    assert KEY not in r.stdout + r.stderr
    path = home / "config.toml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert KEY in path.read_text()
    r = _sophon(home, "config", "show")
    assert r.returncode == 0
    assert KEY not in r.stdout + r.stderr
    assert "api_key:" in r.stdout and KEY[-4:] in r.stdout
    r = _sophon(home, "--json", "config", "show")
    import json

    assert json.loads(r.stdout)["base_url"] == DEFAULT_BASE_URL


def test_set_key_refuses_empty_input(home):
    r = _sophon(home, "config", "set-key", input="")
    assert r.returncode == 2
    assert r.stderr.startswith("error: no API key given") and len(r.stderr.strip().splitlines()) == 1
    assert not (home / "config.toml").exists()


def test_config_set_profile_and_precedence_end_to_end(home):
    assert _sophon(home, "config", "set", "base_url", "https://one.example").returncode == 0
    assert (
        _sophon(home, "config", "set", "base_url", "https://two.example", "--profile", "two").returncode == 0
    )
    assert "https://one.example" in _sophon(home, "config", "show").stdout
    assert "https://two.example" in _sophon(home, "--profile", "two", "config", "show").stdout
    shown = _sophon(
        home,
        "--base-url",
        "https://opt.example",
        "config",
        "show",
        env={"SOPHON_BASE_URL": "https://env.example"},
    )
    assert "https://opt.example" in shown.stdout
    assert (
        "https://env.example"
        in _sophon(home, "config", "show", env={"SOPHON_BASE_URL": "https://env.example"}).stdout
    )


def test_config_set_rejects_api_key_and_unknown_names(home):
    r = _sophon(home, "config", "set", "api_key", "oops")
    assert r.returncode == 2 and "set-key" in r.stderr
    r = _sophon(home, "config", "set", "colour", "blue")
    assert r.returncode == 2 and "unknown setting" in r.stderr
    r = _sophon(home, "config", "set", "base_url", "ftp://x")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_unknown_command_is_usage_error(home):
    r = _sophon(home, "frobnicate")
    assert r.returncode == 2


def test_missing_key_exit_code_names_next_step(home):
    r = _sophon(home, "job", "get", "job_x")
    # exit 4 once the command exists; a placeholder exits 1 — both must be one line without a traceback
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _one_error(r, code):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_malformed_config_file_is_exit_2_naming_file_and_line(home):
    home.mkdir(parents=True)
    path = home / "config.toml"
    path.write_text('[profiles.default]\nbase_url = "https://x.example"\ntimeout = = 3\n')
    line = _one_error(_sophon(home, "job", "get", "job_x"), 2)
    assert f"{path} line 3: not valid TOML" in line
    path.write_bytes(b'[profiles.default]\nbase_url = "\xff"\n')
    assert f"{path} line 2" in _one_error(_sophon(home, "config", "show"), 2)


def test_a_config_value_of_the_wrong_type_is_exit_2(home):
    update_config("default", {"timeout": "soon"})
    line = _one_error(_sophon(home, "config", "show"), 2)
    assert "config.toml" in line and "timeout" in line
    line = _one_error(_sophon(home, "config", "show", env={"SOPHON_TIMEOUT": "-1"}), 2)
    assert "SOPHON_TIMEOUT" in line


def test_a_profile_that_does_not_exist_is_exit_2(home):
    update_config("staging", {"base_url": "https://staging.example"})
    line = _one_error(_sophon(home, "--profile", "nope", "config", "show"), 2)
    assert "profile 'nope' not found" in line and "staging" in line
    line = _one_error(_sophon(home, "job", "get", "job_x", env={"SOPHON_PROFILE": "nope"}), 2)
    assert "profile 'nope' not found" in line
    # the default profile may be absent (defaults apply), and `config set` creates a profile
    assert _sophon(home, "config", "show").returncode == 0
    assert _sophon(home, "--profile", "new", "config", "set", "timeout", "5").returncode == 0
    assert _sophon(home, "--profile", "new", "config", "show").returncode == 0


def test_a_password_in_the_base_url_is_masked_in_the_settings_representation(home, monkeypatch):
    monkeypatch.setenv("SOPHON_BASE_URL", "https://alice:hunter2secret@api.example/v?x=1")
    s = load_settings()
    assert s.base_url == "https://alice:hunter2secret@api.example/v?x=1"  # the client still uses it
    assert s.redacted_base_url == "https://alice:****@api.example/v?x=1"
    assert "hunter2secret" not in repr(s) and "hunter2secret" not in str(s)
    from sophon_cli.settings import redacted_url

    assert redacted_url("https://token@api.example") == "https://****@api.example"
    assert redacted_url("https://api.example/") == "https://api.example/"


def test_stall_and_min_rate_settings(home, monkeypatch):
    monkeypatch.setenv("SOPHON_STALL_SECONDS", "5")
    update_config("default", {"min_rate": 16.0})
    s = load_settings()
    assert (s.stall_seconds, s.min_rate) == (5.0, 16.0)
