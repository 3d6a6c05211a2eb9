"""Usage errors and help as a newcomer meets them (no server needed: nothing is sent)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli.helpers import assert_one_line_error, cli_env


def _run(tmp_path, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        env=cli_env(None, tmp_path / "home", SOPHON_BASE_URL="http://127.0.0.1:9", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["job", "list", "--limit", "x"], "--limit takes a whole number, not 'x'"),
        (["job", "list", "--limit=1.5"], "--limit takes a whole number, not '1.5'"),
        (["upload", "-j", "many", "f.mp4"], "--concurrency takes a whole number, not 'many'"),
        (["cache", "prune", "--older-than", "soon"], "--older-than takes a number, not 'soon'"),
    ],
)
def test_a_bad_number_names_the_option_and_the_value(tmp_path, args, needle):
    """typer said "Input should be a valid integer, unable to parse string as an integer", naming
    neither the value nor anything a user typed."""
    line = assert_one_line_error(_run(tmp_path, *args), 2, needle, "--help")
    assert "Input should be" not in line


@pytest.mark.parametrize(
    "args,needle",
    [
        (["server", "--workers", "0"], "--workers must be at least 1 (got 0)"),
        (["compare", "--subsample=0", "a.mp4", "b.mp4"], "--subsample must be at least 1 (got 0)"),
        (["encode", "--min-vmaf", "101", "a.mp4"], "--min-vmaf must be at most 100 (got 101)"),
        (["server", "stop", "--timeout", "0"], "--timeout must be at least 0.1 (got 0)"),
    ],
)
def test_a_value_out_of_range_names_the_option_the_bound_and_the_value(tmp_path, args, needle):
    """typer said "Invalid value for '--workers': Input should be greater than or equal to 1",
    without the value, where the commands' own checks say "--limit must be at least 1 (got -5)"."""
    line = assert_one_line_error(_run(tmp_path, *args), 2, needle, "--help")
    assert "Input should be" not in line


def test_help_command_is_the_same_as_help_flag(tmp_path):
    """`sophon help` answered "No such command 'help'. Did you mean 'health'?"."""
    for words in ([], ["job"], ["job", "list"]):
        via_word = _run(tmp_path, "help", *words)
        via_flag = _run(tmp_path, *words, "--help")
        assert via_word.returncode == 0 and via_flag.returncode == 0, via_word.stderr
        assert via_word.stdout == via_flag.stdout and via_word.stdout.startswith("Usage: sophon")
    assert_one_line_error(_run(tmp_path, "help", "jbo"), 2, "No such command 'jbo'", "'job'")


@pytest.mark.parametrize("words", [[], ["job"], ["uploads"], ["webhooks"], ["config"], ["cache"]])
def test_sophon_or_a_group_alone_prints_its_help_on_stdout_and_exits_0(tmp_path, words):
    """It was the help on stderr and exit 2, as if asking what there is were a mistake (gh prints
    the help on stdout with exit 0); a missing argument stays a usage error."""
    alone = _run(tmp_path, *words)
    assert alone.returncode == 0, alone.stderr
    assert alone.stderr == ""
    assert alone.stdout == _run(tmp_path, *words, "--help").stdout
    assert alone.stdout.startswith(f"Usage: sophon {' '.join(words)}".rstrip() + " ")


def test_a_missing_argument_is_still_a_usage_error(tmp_path):
    assert_one_line_error(
        _run(tmp_path, "job", "get"), 2, "Missing argument 'JOB_ID'", "sophon job get --help"
    )


def test_a_base_url_that_is_not_http_is_bad_input_before_any_request(tmp_path):
    """It was "cannot reach the SOPHON server at ftp://x (UnsupportedProtocol ...); check your
    network" with exit 8, after the retries."""
    flag = _run(tmp_path, "--base-url", "ftp://user:hunter2@files.example/v1", "job", "list")
    assert_one_line_error(flag, 2, "'ftp://files.example/v1'", "http:// or https://", secrets=("hunter2",))
    env = cli_env(None, tmp_path / "home", SOPHON_BASE_URL="api.example.com", SOPHON_API_KEY="k" * 20)
    bare = subprocess.run(
        [sys.executable, "-m", "sophon_cli", "health"], env=env, capture_output=True, text=True, timeout=60
    )
    assert_one_line_error(bare, 2, "'api.example.com'", "SOPHON_BASE_URL", "--local")


@pytest.mark.parametrize(
    "args,suggested",
    [
        (["job", "list", "--josn"], "--json"),  # suggested --since: the global flags were not looked at
        (["job", "list", "--qiuet"], "--quiet"),  # suggested nothing
        (["job", "list", "--stauts", "failed"], "--status"),  # the command's own options still
    ],
)
def test_a_misspelt_option_after_a_command_suggests_the_global_flags_too(tmp_path, args, suggested):
    line = assert_one_line_error(_run(tmp_path, *args), 2, f"No such option: {args[2]}")
    assert f"(Possible options: {suggested})" in line, line


def test_an_api_key_read_with_its_line_ending_works_and_a_broken_one_is_said_not_quoted(cli):
    """`SOPHON_API_KEY=$(cat key.txt)` of a CRLF file keeps the CR: the key went out as it was, the
    HTTP library refused the header ("Illegal header value b'Bearer <the key>\\r'": the key in the
    error) and it read as an unreachable server (exit 8)."""
    from tests.helpers.env import TEST_KEY

    crlf = cli("job", "list", env={"SOPHON_API_KEY": TEST_KEY + "\r\n"})
    assert crlf.returncode == 0, crlf.stderr
    assert crlf.stdout.startswith("ID\tSTATUS")
    doctor = cli("doctor", env={"SOPHON_API_KEY": TEST_KEY + "\r\n"})  # the library's settings strip it too
    assert TEST_KEY not in doctor.stdout + doctor.stderr
    assert [ln for ln in doctor.stdout.splitlines() if ln.split("\t")[1] == "auth"][0].startswith("ok\t")
    broken = TEST_KEY[:6] + " " + TEST_KEY[6:]
    res = cli("job", "list", env={"SOPHON_API_KEY": broken})
    assert_one_line_error(res, 4, "spaces or control characters", "SOPHON_API_KEY", secrets=(TEST_KEY[6:],))


def test_a_directory_as_state_file_and_an_impossible_server_port_are_usage_errors(tmp_path, clip):
    """Both ended in "unexpected ValueError/OverflowError ... report it" (exit 1)."""
    for sub in ("list", "prune"):
        res = _run(tmp_path, "cache", sub, "--state-file", tmp_path)
        assert_one_line_error(res, 2, f"--state-file {tmp_path} is a directory")
    state_dir = tmp_path / "ci-cache"
    state_dir.mkdir()
    key = {"SOPHON_API_KEY": "k" * 20}  # without one, the missing key was said first
    res = _run(tmp_path, "encode", "--state-file", state_dir, clip, "-o", tmp_path / "out", **key)
    assert_one_line_error(res, 2, f"--state-file {state_dir} is a directory", "state.json")
    # it was exit 1 "Is a directory" after the store had made its lock beside it
    assert [p.name for p in tmp_path.iterdir()] == ["ci-cache"], list(tmp_path.iterdir())
    res = _run(tmp_path, "server", "--port", "99999", "--data-dir", tmp_path / "srv")
    line = assert_one_line_error(res, 2, "--port must be 0-65535 (got 99999)")
    assert "unexpected" not in line


@pytest.mark.parametrize(
    "command",
    [
        ["webhooks", "verify", "--signature", "x", "--timestamp", "1", "--body-file", "/dev/null"],
        ["webhooks", "listen", "--port", "0"],  # before: it listened until the test's timeout
    ],
)
def test_a_negative_tolerance_is_a_usage_error_in_both_webhook_commands(tmp_path, command):
    """`--tolerance -5` was taken, and then every delivery was refused as out of tolerance; verify
    and listen declared the option each on its own, so one check covers both now."""
    res = _run(tmp_path, *command, "--secret", "s", "--tolerance", "-5")
    assert_one_line_error(res, 2, "--tolerance", f"sophon {' '.join(command[:2])} --help")


@pytest.mark.parametrize(
    "args",
    [
        ["job", "list", "--jq", ""],  # acted like --json (NDJSON, exit 0)
        ["--jq", "", "job", "list"],
        ["job", "list", "--jq"],  # "No such option: --jq (Possible options: --jq)"
        ["job", "list", "--json="],  # printed the plain table: no field named, no JSON either
    ],
)
def test_an_empty_jq_expression_or_field_list_is_a_usage_error_naming_the_option(cli, args):
    option = "--json=" if "--json=" in args else "--jq"
    line = assert_one_line_error(cli(*args), 2, option)
    assert "Possible options" not in line


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory nobody may create files in: mode 0500, or immutable (chattr +i) as root."""
    import os
    import shutil

    d = tmp_path / "locked"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o500)
        yield d
        d.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("root ignores modes, and chattr +i is not available here")
    try:
        yield d
    finally:
        subprocess.run([chattr, "-i", str(d)], check=True)


@pytest.mark.parametrize(
    "args",
    [
        ["config", "set", "timeout", "5"],
        ["cache", "list"],
        ["job", "list"],  # reading the config file
        ["--local", "job", "list"],
    ],
)
def test_a_sophon_home_that_cannot_be_used_names_it_the_reason_and_the_next_step(tmp_path, args):
    """With SOPHON_HOME a file it was exit 1 "Not a directory: …/config.toml; check the path: does
    the file or its directory exist?" (or "File exists: …; check the path, its permissions and
    free disk space"): neither said it was SOPHON_HOME, nor what to do."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    res = _run(tmp_path, *args, SOPHON_HOME=home, SOPHON_API_KEY="k" * 20)
    assert_one_line_error(
        res,
        2,
        f"sophon cannot use SOPHON_HOME {home}",
        f"{home} is a file, not a directory",
        "set SOPHON_HOME",
    )
    below = _run(tmp_path, *args, SOPHON_HOME=home / "sophon", SOPHON_API_KEY="k" * 20)
    assert_one_line_error(below, 2, f"SOPHON_HOME {home / 'sophon'}", f"{home} is a file")


@pytest.mark.parametrize("args", [["config", "set", "timeout", "5"], ["cache", "list"]])
def test_a_sophon_home_in_a_directory_without_write_permission_says_which(unwritable_dir, tmp_path, args):
    home = unwritable_dir / "home"
    res = _run(tmp_path, *args, SOPHON_HOME=home)
    line = assert_one_line_error(res, 2, f"sophon cannot use SOPHON_HOME {home}", f"at {unwritable_dir}")
    assert f"fix the permissions of {unwritable_dir}" in line and "set SOPHON_HOME" in line, line
    assert ("Permission denied" in line) or ("Operation not permitted" in line), line


def test_without_sophon_home_the_user_state_dir_is_named_the_same_way(tmp_path):
    state = tmp_path / "xdg-state-is-a-file"
    state.write_text("")
    res = _run(tmp_path, "cache", "list", SOPHON_HOME=None, XDG_STATE_HOME=state)
    line = assert_one_line_error(
        res, 2, f"sophon cannot use its directory {state / 'sophon'}", "set SOPHON_HOME"
    )
    assert f"{state} is a file, not a directory" in line, line
