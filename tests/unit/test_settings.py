"""Settings precedence (options > env > config profile > defaults) and private config files, in
process (the `sophon config` commands as subprocesses: tests/cli/test_config_cli.py)."""

from __future__ import annotations

import os
import stat

import pytest

from sophon_cli.settings import DEFAULT_BASE_URL, load_settings, redact, update_config
from tests.helpers.env import SETTINGS_KEY, isolated_home

KEY = SETTINGS_KEY


@pytest.fixture
def home(tmp_path, monkeypatch):
    return isolated_home(tmp_path, monkeypatch)


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


def test_a_malformed_secrets_file_names_the_file_and_line_once(tmp_path):
    from sophon_cli.webhooks.secret_store import SecretStore, SecretStoreError

    path = tmp_path / "webhook-secrets.toml"
    path.write_text('[webhooks.wh_1]\nsecret = "s"\n[webhooks\n')
    with pytest.raises(SecretStoreError) as info:
        SecretStore(path).entries()
    message = str(info.value)
    assert message.startswith(f"{path} line 3: not valid TOML") and message.count(str(path)) == 1


def test_config_writes_never_go_through_a_planted_temporary_link(home, tmp_path):
    """The config file is written by the one private-file writer (random O_EXCL|O_NOFOLLOW
    temporary name): a link planted at the old predictable name is never followed."""
    victim = tmp_path / "victim"
    victim.write_text("keep")
    home.mkdir(parents=True, exist_ok=True)
    (home / f".config.toml.{os.getpid()}.tmp").symlink_to(victim)
    update_config("default", {"timeout": 5.0})
    assert victim.read_text() == "keep"
    assert load_settings().timeout == 5.0
    assert stat.S_IMODE(os.stat(home / "config.toml").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
