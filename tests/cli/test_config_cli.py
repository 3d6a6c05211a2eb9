"""`sophon config` and settings errors through the real CLI in a subprocess (no server needed):
set-key from stdin, show redacts, precedence end to end, malformed config files, unknown profiles.
The in-process settings tests are tests/unit/test_settings.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from sophon_cli.settings import DEFAULT_BASE_URL, update_config
from tests.helpers.env import SETTINGS_KEY, cli_env, isolated_home

KEY = SETTINGS_KEY


@pytest.fixture
def home(tmp_path, monkeypatch):
    """SOPHON_HOME for the child and for ``update_config`` in this process."""
    return isolated_home(tmp_path, monkeypatch)


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


@pytest.mark.parametrize(
    "args,message",
    [
        (["timeout", "-5"], "bad value for timeout: '-5'; give a finite number more than 0"),
        (["timeout", "-0.5", "--profile", "ci"], "bad value for timeout: '-0.5'"),
        (
            ["--profile", "ci", "max_retries", "-1"],
            "bad value for max_retries: '-1'; give a finite number at least 0",
        ),
        (["retry_budget", "-1e3"], "bad value for retry_budget: '-1e3'"),
        (["timeout", "5", "--profle", "ci"], "No such option: --profle (Possible options: --profile)"),
    ],
)
def test_config_set_a_negative_number_reaches_the_check_without_dashes(home, args, message):
    """`config set timeout -5` said "No such option: -5" (click read the value as an option) unless
    it was written `config set timeout -- -5`; a misspelt option is still said as one."""
    from tests.cli.helpers import assert_one_line_error

    assert_one_line_error(_sophon(home, "config", "set", *args), 2, message)
    assert not (home / "config.toml").exists()
    ok = _sophon(home, "config", "set", "timeout", "12", "--profile", "ci")
    assert ok.returncode == 0, ok.stderr
    assert "timeout = 12.0" in (home / "config.toml").read_text()


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
