"""A missing or rejected API key, against the real local server: the library tells the two apart
(typed errors), the CLI says which it is in its own terms (where the key came from, never the key,
never the server's "send 'Authorization: Bearer <key>'") and how to set one, exit 4."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sophon_cli.client.errors import AuthError, KeyMissingError, KeyRejectedError, NextStep
from sophon_cli.client.http import SophonClient
from tests.helpers.env import cli_env

WRONG = "wrong-key-0123456789abcdef"


def run(args, env, input=None):
    return subprocess.run(
        [sys.executable, "-m", "sophon_cli", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    line = lines[0]
    assert "Traceback" not in res.stderr
    assert "Authorization" not in line and "Bearer" not in line and "header" not in line, line
    assert WRONG not in res.stderr and WRONG[-4:] not in res.stderr  # not even masked
    return line


def test_the_library_tells_a_missing_key_from_a_rejected_one(server):
    with SophonClient(server.url, None) as c:
        with pytest.raises(KeyMissingError) as missing:
            c.jobs.list()
    with SophonClient(server.url, WRONG) as c:
        with pytest.raises(KeyRejectedError) as rejected:
            c.jobs.list()
    for info in (missing, rejected):
        err = info.value
        assert isinstance(err, AuthError) and err.status == 401 and err.next_step is NextStep.SET_KEY
        assert WRONG not in str(err) and WRONG not in repr(err)


def test_a_key_from_the_environment_that_the_server_rejects(server, tmp_path):
    env = cli_env(server=server, home=tmp_path, extra={"SOPHON_API_KEY": WRONG})
    res = run(["job", "list"], env)
    assert res.returncode == 4
    line = one_line(res)
    assert f"the server at {server.url} rejected the API key from SOPHON_API_KEY (401" in line
    assert "set SOPHON_API_KEY to a valid key" in line and "sophon config set-key" in line
    assert "(request id req_" in line


def test_a_key_from_a_profile_that_the_server_rejects(server, tmp_path):
    env = cli_env(server=server, home=tmp_path)
    del env["SOPHON_API_KEY"]
    stored = run(["config", "set-key", "--profile", "work"], env, input=WRONG + "\n")
    assert stored.returncode == 0, stored.stderr
    res = run(["--profile", "work", "job", "get", "job_1"], env)
    assert res.returncode == 4
    line = one_line(res)
    assert "rejected the API key of profile 'work' in " in line and "config.toml" in line
    assert "store a valid key for this server with `sophon config set-key --profile work`" in line


def test_no_key_at_all_names_where_one_was_looked_for(server, tmp_path):
    env = cli_env(server=server, home=tmp_path)
    del env["SOPHON_API_KEY"]
    res = run(["job", "list"], env)
    assert res.returncode == 4
    line = one_line(res)
    assert "no API key is set for profile 'default'" in line and "SOPHON_API_KEY is not set" in line
    assert "store one with `sophon config set-key`" in line


def test_an_empty_key_variable_is_named_as_the_cause(server, tmp_path):
    env = cli_env(server=server, home=tmp_path, extra={"SOPHON_API_KEY": ""})
    res = run(["job", "list"], env)
    assert res.returncode == 4
    line = one_line(res)
    assert "SOPHON_API_KEY is set but empty" in line and "unset it" in line


def test_doctor_says_the_key_was_rejected_without_the_servers_header_talk(server, tmp_path):
    env = cli_env(server=server, home=tmp_path, extra={"SOPHON_API_KEY": WRONG})
    res = run(["doctor"], env)
    assert res.returncode == 1
    auth = [ln for ln in res.stdout.splitlines() if ln.split("\t")[1:2] == ["auth"]]
    assert len(auth) == 1 and auth[0].startswith("fail\tauth\tthe server rejected the key (HTTP 401"), (
        res.stdout
    )
    assert "Bearer" not in res.stdout and "header" not in res.stdout and WRONG not in res.stdout


def test_a_local_server_key_that_changed_under_it_says_to_restart_it(tmp_path):
    env = cli_env(home=tmp_path)  # no key, no base URL: --local brings its own
    try:
        assert run(["--local", "job", "list"], env).returncode == 0
        (tmp_path / "server" / "api_key").write_text(WRONG)  # the running server keeps the old key
        res = run(["--local", "job", "list"], env)
        assert res.returncode == 4
        line = one_line(res)
        assert "the local server rejected the key from the local server's key file (401" in line
        assert "stop it with `sophon server stop` and run the command again" in line
        assert run(["server", "stop"], env).returncode == 0
        assert run(["--local", "job", "list"], env).returncode == 0  # the step it names works
    finally:
        run(["server", "stop"], env)
