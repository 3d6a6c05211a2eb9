"""Restored by the audit: these four tests came with 39114a8 and were dropped when 090138b rewrote
tests/cli/test_config_cli.py, while tests/README.md kept citing them.

`sophon config show` says where each setting comes from and never shows a secret; `config
set-key` with stdin closed is a one-line error; local file errors name the right next step."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.env import cli_env

from .helpers import assert_one_line_error

KEY = "sk_live_" + "K" * 24 + "WXYZ"


def _show(cli, *args, **kw) -> dict[str, str]:
    res = cli(*args, "config", "show", **kw)
    assert res.returncode == 0, res.stderr
    return dict(line.split(":", 1) for line in res.stdout.splitlines()), res


def test_show_names_the_source_of_every_setting(cli, tmp_path):
    home = tmp_path / "sophon-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[profiles.default]\nmax_retries = 2\napi_key = "{KEY}"\n'
        '[profiles.other]\nbase_url = "https://other.example"\n'
    )
    env = {"SOPHON_API_KEY": None, "SOPHON_BASE_URL": None, "SOPHON_TIMEOUT": "7"}
    rows, res = _show(cli, env=env)
    cfg = str(home / "config.toml")
    assert rows["profile"].strip() == "default  (default)"
    assert rows["base_url"].strip() == "https://api.liqhtworks.xyz  (default)"
    assert rows["timeout"].strip() == "7.0  (env SOPHON_TIMEOUT)"
    assert rows["max_retries"].strip() == f"2  (file {cfg} [profiles.default])"
    assert rows["api_key"].strip() == f"****WXYZ  (file {cfg} [profiles.default])"
    assert KEY not in res.stdout + res.stderr
    rows, _ = _show(cli, "--profile", "other", "--base-url", "https://flag.example", env=env)
    assert rows["profile"].strip() == "other  (flag --profile)"
    assert rows["base_url"].strip() == "https://flag.example  (flag --base-url)"
    assert rows["api_key"].strip() == "(not set)  (default)"
    rows, _ = _show(cli, "--local", env=env)
    assert rows["base_url"].strip() == "local  (flag --local)"

    data = json.loads(cli("--json", "config", "show", env=env).stdout)
    assert data["timeout"] == 7.0 and data["max_retries"] == 2 and data["api_key"] == "****WXYZ"
    assert data["sources"]["timeout"] == {"source": "env", "origin": "SOPHON_TIMEOUT"}
    assert data["sources"]["base_url"] == {"source": "default", "origin": None}
    assert data["sources"]["api_key"]["source"] == "file"


@pytest.mark.parametrize("where", ["env", "file", "flag"])
def test_show_never_prints_the_base_urls_userinfo(cli, tmp_path, where):
    url = "https://deploy-user:hunter2-secret@api.example.com/base"
    home = tmp_path / "sophon-home"
    home.mkdir()
    args: list[str] = []
    env = {"SOPHON_BASE_URL": None}
    if where == "env":
        env["SOPHON_BASE_URL"] = url
    elif where == "file":
        (home / "config.toml").write_text(f'[profiles.default]\nbase_url = "{url}"\n')
    else:
        args = ["--base-url", url]
    for flags in ([], ["--json"], ["-v"]):
        res = cli(*flags, *args, "config", "show", env=env)
        assert res.returncode == 0, res.stderr
        text = res.stdout + res.stderr
        assert "hunter2" not in text and "deploy-user" not in text
        assert "https://****@api.example.com/base" in text
    rows, _ = _show(cli, *args, env=env)
    assert rows["base_url"].strip().startswith(f"https://****@api.example.com/base  ({where}")


def test_set_key_with_stdin_closed_is_one_line(tmp_path):
    home = tmp_path / "home"
    env = cli_env(home=home)
    res = subprocess.run(
        [sys.executable, "-m", "sophon_cli", "config", "set-key"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.close(0),  # the child starts as with `<&-`
    )
    line = assert_one_line_error(res, 2, "standard input", "set-key")
    assert "unexpected" not in line
    assert not (home / "config.toml").exists()


def test_local_file_errors_name_the_cause_not_always_disk_space():
    from sophon_cli.cli.errors import classify

    code, missing = classify(FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such/dir/out"))
    assert code == 1 and "/no/such/dir/out" in missing
    assert "disk space" not in missing and "exist" in missing
    _, not_dir = classify(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/etc/hosts/x"))
    assert "disk space" not in not_dir
    _, denied = classify(PermissionError(errno.EACCES, "Permission denied", "/root/x"))
    assert "permissions" in denied and "disk space" not in denied
    _, full = classify(OSError(errno.ENOSPC, "No space left on device", "/mnt/x"))
    assert "disk space" in full


def test_every_setting_config_set_takes_is_in_its_help_and_in_config_show(cli):
    """`config set stall_seconds 12` worked, yet its help named four keys and `config show` left
    stall_seconds and min_rate out: the user could not see what they had set."""
    from sophon_cli.settings import SETTABLE_KEYS

    helped = cli("config", "set", "--help")
    assert helped.returncode == 0, helped.stderr
    flat = " ".join(helped.stdout.split())
    for name in SETTABLE_KEYS:
        assert name in flat, (name, helped.stdout)
        value = "https://x.example" if name == "base_url" else "3"
        made = cli("config", "set", name, value, env={"SOPHON_BASE_URL": None})
        assert made.returncode == 0, made.stderr
    rows, _ = _show(cli, env={"SOPHON_BASE_URL": None, "SOPHON_TIMEOUT": None})
    for name in SETTABLE_KEYS:
        assert name in rows, (name, rows)
        assert "(file " in rows[name], (name, rows[name])


def test_config_set_refuses_what_the_settings_would_refuse_later(cli, monkeypatch, tmp_path):
    """`config set timeout nan` was written to the file, and from then on every command failed
    loading its settings ("timeout = nan: Input should be greater than 0"). It accepts a number
    exactly when the settings do (and only finite ones)."""
    from sophon_cli.client.errors import SophonError
    from sophon_cli.settings import load_settings

    monkeypatch.setenv("SOPHON_HOME", str(tmp_path / "probe-home"))
    for name in ("timeout", "max_retries", "retry_budget", "stall_seconds", "min_rate"):
        for value in ("nan", "inf", "-1", "0", "0.5", "3"):
            monkeypatch.setenv(f"SOPHON_{name.upper()}", value)
            try:
                load_settings()
                loads = value not in ("nan", "inf")
            except SophonError:
                loads = False
            monkeypatch.delenv(f"SOPHON_{name.upper()}")
            if name == "max_retries" and value == "0.5":
                continue  # not an int: refused by `config set` as a bad value before any bound
            res = cli("config", "set", name, "--", value, env={f"SOPHON_{name.upper()}": None})
            assert (res.returncode == 0) == loads, (name, value, res.stderr)
            if not loads:
                assert_one_line_error(res, 2, f"bad value for {name}")
    shown = cli("config", "show")
    assert shown.returncode == 0, shown.stderr  # the file is still loadable
