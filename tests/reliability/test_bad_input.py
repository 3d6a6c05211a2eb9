"""Bad input, across the commands: every case prints one line on stderr (``error: ...`` naming
the next step), exits with its documented code, shows no traceback, prints no data on stdout,
never shows the key, and loses nothing (inputs unchanged, no partial output at a target path).

Exit codes (sophon_cli/exitcodes.py): 1 error, 2 usage/bad input, 3 not found, 4 auth,
6 timed out, 8 unreachable, 130 interrupted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sophon_cli.client.files import PART_SUFFIX
from tests.cli.helpers import assert_one_line_error, free_port
from tests.conftest import TEST_KEY, _make_clip

from .conftest import db_rows, padded_video, popen_cli, run_cli, sha256_of
from .stress import MB

NOBODY = 65534


@dataclass
class Case:
    id: str
    args: Callable[[dict], list]  # ctx -> argv (ctx["work"] is this row's own empty directory)
    code: int
    needles: tuple[str, ...] = ()  # fragments the one line must contain (case-sensitive)
    env: dict = field(default_factory=dict)
    url: str | None = None  # "down" for a closed port
    as_nobody: bool = False  # run without root's power to ignore permissions
    limit_fsize: int | None = None  # RLIMIT_FSIZE bytes (writes past it fail with EFBIG)
    marks: object = ()


PROGRESS = re.compile(r"\s\d+(\.\d+)?%")


def _as_nobody():
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@functools.lru_cache(maxsize=1)
def nobody_python() -> tuple[str, dict] | None:
    """When the suite runs as root (which ignores permission bits), a (python, env) pair the
    unprivileged user can run the CLI with, or None. Tries this interpreter, then the system one
    of the same version with this environment's packages on PYTHONPATH."""
    if os.geteuid() != 0:
        return None
    import sophon_cli

    repo = str(Path(sophon_cli.__file__).resolve().parents[1])
    site = [p for p in sys.path if p.endswith("site-packages")]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [(sys.executable, {})]
    for exe in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.path.exists(exe):
            candidates.append((exe, {"PYTHONPATH": os.pathsep.join([*site, repo])}))
    for exe, extra in candidates:
        try:
            proc = subprocess.run(
                [exe, "-c", "import sophon_cli.cli.main, httpx, pydantic, rich"],
                preexec_fn=_as_nobody,
                env={**os.environ, **extra},
                capture_output=True,
                timeout=60,
                cwd="/",
            )
        except OSError:
            continue
        if proc.returncode == 0:
            return exe, extra
    return None


def nobody_can_run() -> bool:
    return nobody_python() is not None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Module fixtures: a server with one completed job, inputs of every kind, in a directory the
    unprivileged user can reach (for the permission cases when the suite runs as root)."""
    from sophon_cli.client.http import SophonClient
    from sophon_cli.server.runner import LocalServer

    root = Path(tempfile.mkdtemp(prefix="sophon-rel-bad-"))
    os.chmod(root, 0o777)
    base = tmp_path_factory.mktemp("badsrv")
    srv = LocalServer(base / "data", api_keys=[TEST_KEY], request_log=base / "log.jsonl").start()
    clip = _make_clip(root / "clip.mp4", seconds=0.4, size="64x64")
    os.chmod(clip, 0o644)
    with SophonClient(srv.url, TEST_KEY) as c:
        up = c.uploads.upload_file(clip)
        job = c.jobs.create(up.upload_id, profile="sophon-espresso", idempotency_key="bad-input-job")
        done = c.jobs.wait(job.id, timeout=120)
        slow = c.jobs.create(
            up.upload_id, metadata={"sophon_local_delay": 120}, idempotency_key="bad-input-slow"
        )
    assert done.status == "completed"
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.txt").write_text("not a video\n" * 100)
    (root / "adir").mkdir()
    locked = root / "locked.mp4"
    shutil.copy(clip, locked)
    os.chmod(locked, 0o000)
    os.mkfifo(root / "fifo.mp4")
    (root / "meta-bad.json").write_text("{not json")
    (root / "meta-list.json").write_text("[1, 2]")
    (root / "meta-big.json").write_text('{"k": "' + "x" * 17000 + '"}')
    (root / "a-file").write_text("x")
    ro = root / "readonly"
    ro.mkdir()
    os.chmod(ro, 0o555)
    home = root / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    readonly = ro
    if os.geteuid() == 0 and not nobody_can_run():
        # root ignores permission bits; a read-only file system stops it (when there is one)
        readonly = Path("/sys/sophon-rel-readonly")
    ctx = {
        "root": root,
        "srv": srv,
        "clip": clip,
        "job": done.id,
        "upload": up.upload_id,
        "slow": slow.id,
        "home": home,
        "readonly": readonly,
    }
    yield ctx
    srv.stop()
    os.chmod(ro, 0o755)
    shutil.rmtree(root, ignore_errors=True)


def _j(ctx):
    return ctx["job"]


def _put(c: dict, name: str, data: bytes | str = b"") -> Path:
    """A file in the row's own directory (made before the snapshot: it is the row's input)."""
    path = c["work"] / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _home_file(c: dict, case_id: str, name: str, text: str) -> Path:
    """A file in the row's SOPHON_HOME (``world["home"] / case id``, outside the snapshot)."""
    home = c["home"] / case_id
    home.mkdir(parents=True, exist_ok=True)
    path = home / name
    path.write_text(text)
    return path


def _up(c: dict, *args) -> list:
    return ["job", "create", "--upload", c["upload"], *args]


CASES = [
    # local files
    Case(
        "upload-missing-file", lambda c: ["upload", c["work"] / "nope.mp4"], 2, ("nope.mp4", "no such file")
    ),
    Case("upload-empty-file", lambda c: ["upload", c["root"] / "empty.mp4"], 2, ("empty.mp4", "empty")),
    Case("upload-directory", lambda c: ["upload", c["root"] / "adir"], 2, ("is a directory",)),
    Case(
        "upload-unreadable-file",
        lambda c: ["upload", c["root"] / "locked.mp4"],
        2,
        ("locked.mp4", "readable"),
        as_nobody=True,
    ),
    Case("upload-fifo", lambda c: ["upload", c["root"] / "fifo.mp4"], 2, ("not a regular file",)),
    Case("upload-not-a-video", lambda c: ["upload", c["root"] / "notes.txt"], 1, ("video",)),
    Case(
        "upload-bad-concurrency", lambda c: ["upload", c["clip"], "--concurrency", "0"], 2, ("--concurrency",)
    ),
    Case(
        "upload-concurrency-not-a-number",
        lambda c: ["upload", c["clip"], "--concurrency", "many"],
        2,
        ("concurrency",),
    ),
    Case(
        "job-create-missing-file", lambda c: ["job", "create", c["work"] / "nope.mp4"], 2, ("no such file",)
    ),
    Case("job-create-no-source", lambda c: ["job", "create"], 2, ("FILE or --upload",)),
    # encode
    Case("encode-glob-matches-nothing", lambda c: ["encode", str(c["root"] / "*.nothing")], 2),
    Case("encode-bad-fallback", lambda c: ["encode", c["clip"], "--fallback", "bogus"], 2, ("fallback",)),
    Case("encode-bad-shard", lambda c: ["encode", c["clip"], "--shard", "3/2"], 2, ("shard",)),
    Case(
        "encode-escaping-name-template",
        lambda c: ["encode", c["clip"], "--name-template", "../{stem}.mp4"],
        2,
        ("template",),
    ),
    # local validation of job options, before anything is sent
    Case("job-create-height-too-small", lambda c: [*_up(c), "--height", "100"], 2, ("144", "4320")),
    Case(
        "job-create-bad-height",
        lambda c: ["job", "create", "--upload", "upl_x", "--height", "50"],
        2,
        ("--height",),
    ),
    Case(
        "job-create-height-too-big",
        lambda c: ["job", "create", c["clip"], "--height", "5000"],
        2,
        ("--height",),
    ),
    Case("job-create-bad-metadata-pair", lambda c: [*_up(c), "--metadata", "novalue"], 2, ("KEY=VALUE",)),
    Case(
        "job-create-bad-metadata-json",
        lambda c: ["job", "create", "--upload", "upl_x", "--metadata-file", c["root"] / "meta-bad.json"],
        2,
        ("not valid JSON",),
    ),
    Case(
        "job-create-bad-metadata-json-in-place",
        lambda c: [*_up(c), "--metadata-file", _put(c, "meta.json", "{oops")],
        2,
        ("not valid JSON",),
    ),
    Case(
        "job-create-metadata-not-object",
        lambda c: ["job", "create", "--upload", "upl_x", "--metadata-file", c["root"] / "meta-list.json"],
        2,
        ("JSON object",),
    ),
    Case(
        "job-create-oversized-metadata-file",
        lambda c: ["job", "create", "--upload", "upl_x", "--metadata-file", c["root"] / "meta-big.json"],
        2,
        ("16384",),
    ),
    Case(
        "job-create-oversized-metadata-flag",
        lambda c: [*_up(c), "--metadata", "blob=" + "x" * 17000],
        2,
        ("16384",),
    ),
    Case(
        "job-create-bad-container", lambda c: [*_up(c), "--container", "avi"], 2, ("container", "mp4 or mkv")
    ),
    Case("job-create-timeout-without-wait", lambda c: [*_up(c), "--timeout", "5"], 2, ("--wait",)),
    # server-side validation: the server's message is shown
    Case(
        "job-create-unknown-profile",
        lambda c: [*_up(c), "--profile", "sophon-bogus"],
        1,
        ("profile", "sophon-bogus", "validation_error"),
    ),
    # unknown ids
    Case(
        "job-get-unknown-id",
        lambda c: ["job", "get", "job_doesnotexist"],
        3,
        ("job_doesnotexist", "404", "not found"),
    ),
    Case("job-wait-unknown-id", lambda c: ["job", "wait", "job_doesnotexist"], 3, ("404",)),
    Case("job-cancel-unknown-id", lambda c: ["job", "cancel", "job_0000000000000000"], 3, ("not found",)),
    Case(
        "download-unknown-id",
        lambda c: ["download", "job_0000000000000000", "-o", f"{c['root']}/dl-unknown/"],
        3,
        ("not found", "404"),
    ),
    Case(
        "download-not-finished",
        lambda c: ["download", c["slow"], "-o", f"{c['root']}/dl-slow/"],
        1,
        ("wait",),
    ),
    Case(
        "webhook-delete-unknown-id",
        lambda c: ["webhooks", "delete", "wh_0000000000000000"],
        3,
        ("not found", "404"),
    ),
    Case(
        "uploads-get-unknown-id",
        lambda c: ["uploads", "get", "upl_doesnotexist"],
        3,
        ("upl_doesnotexist", "404", "not found"),
    ),
    Case("job-wait-timeout", lambda c: ["job", "wait", c["slow"], "--timeout", "1"], 6),
    # credentials and reachability
    Case(
        "no-api-key",
        lambda c: ["job", "get", _j(c)],
        4,
        ("no API key", "SOPHON_API_KEY"),
        env={"SOPHON_API_KEY": None},
    ),
    Case(
        "wrong-api-key",
        lambda c: ["job", "get", _j(c)],
        4,
        ("401", "SOPHON_API_KEY"),
        env={"SOPHON_API_KEY": "sk_wrong_0123456789"},
    ),
    Case(
        "server-down",
        lambda c: ["job", "get", _j(c)],
        8,
        ("SOPHON_BASE_URL",),
        url="down",
        env={"SOPHON_MAX_RETRIES": "1"},
    ),
    # output paths
    Case("download-exists-no-force", lambda c: ["download", _j(c), "-o", c["clip"]], 2, ("--force",)),
    Case(
        "download-dir-is-a-file",
        lambda c: ["download", _j(c), "-o", _put(c, "plainfile") / "out.mp4"],
        2,
        ("plainfile",),
    ),
    Case(
        "download-dir-not-writable",
        lambda c: ["download", _j(c), "-o", c["readonly"] / "out.mp4"],
        2,
        ("out.mp4",),
        as_nobody=True,
    ),
    Case(
        "download-parent-not-creatable",
        lambda c: ["download", _j(c), "-o", c["readonly"] / "sub" / "out.mp4"],
        2,
        as_nobody=True,
    ),
    Case(
        "download-name-too-long",
        lambda c: ["download", _j(c), "-o", c["work"] / ("n" * 257 + ".mp4")],
        2,
        ("too long for this file system", "shorter name"),
    ),
    Case(
        "download-disk-full",
        lambda c: ["download", _j(c), "-o", f"{c['root']}/full/out.mp4"],
        2,
        ("space",),
        limit_fsize=2048,
    ),
    # webhooks
    Case(
        "webhooks-verify-no-secret",
        lambda c: [
            "webhooks",
            "verify",
            "--signature",
            "sha256=00",
            "--timestamp",
            "1",
            "--body-file",
            c["clip"],
        ],
        2,
        ("--secret", "SOPHON_WEBHOOK_SECRET"),
        env={"SOPHON_WEBHOOK_SECRET": None},
    ),
    Case(
        "webhooks-listen-no-secret",
        lambda c: ["webhooks", "listen", "--port", "0"],
        2,
        ("no webhook secret",),
        env={"SOPHON_WEBHOOK_SECRET": None},
    ),
    Case(
        "webhooks-listen-bad-port",
        lambda c: ["webhooks", "listen", "--port", "70000", "--secret", "s"],
        2,
        ("--port",),
    ),
    # checked before any upload (issue 11 items 10 and 17; --json FIELDS)
    Case(
        "encode-output-location-is-a-file",
        lambda c: ["encode", c["clip"], "-o", _put(c, "plainfile") / "out"],
        2,
        ("plainfile",),
    ),
    Case(
        "encode-output-name-too-long",
        lambda c: ["encode", _put(c, "n" * 250 + ".mp4", c["clip"].read_bytes()), "-o", c["work"] / "out"],
        2,
        ("255", "name template"),
    ),
    Case(
        "encode-json-field-list",
        lambda c: ["encode", c["clip"], "-o", c["work"] / "out", "--json", "file,result"],
        2,
        ("no field list", "--jq"),
    ),
    # settings files (issue 11: exit 2 naming the file and line; an unknown profile is not production)
    Case(
        "config-malformed",
        lambda c: [
            _home_file(c, "config-malformed", "config.toml", "[profiles.default\n"),
            "job",
            "get",
            _j(c),
        ][1:],
        2,
        ("config.toml line 1", "not valid TOML"),
    ),
    Case(
        "config-unknown-profile",
        lambda c: ["--profile", "nope", "job", "get", _j(c)],
        2,
        ("profile 'nope' not found",),
    ),
    Case(
        "webhooks-save-secret-broken-store",
        lambda c: [
            _home_file(c, "webhooks-save-secret-broken-store", "webhook-secrets.toml", "[bad\n"),
            "webhooks",
            "create",
            "https://example.com/hook",
            "--save-secret",
        ][1:],  # fmt: skip
        2,
        ("webhook-secrets.toml line 1",),
    ),
    # the command line itself
    Case("completions-unknown-shell", lambda c: ["completions", "tcsh"], 2, ("shell",)),
    Case("unknown-command", lambda c: ["frobnicate"], 2, ("frobnicate",)),
]


def _preexec(case: Case):
    def fn():
        if case.limit_fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.limit_fsize, case.limit_fsize))
        if case.as_nobody and nobody_can_run():
            _as_nobody()

    return fn


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        try:
            if (
                p.is_file()
                and not stat.S_ISFIFO(p.stat().st_mode)
                and "home" not in p.relative_to(root).parts
            ):
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        except PermissionError:
            out[str(p.relative_to(root))] = "unreadable"
    return out


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(world, case: Case):
    root: Path = world["root"]
    if case.as_nobody and os.geteuid() == 0 and not nobody_can_run():
        if case.id == "upload-unreadable-file":
            pytest.skip(
                "running as root, and the unprivileged user cannot run this python: no unreadable file"
            )
        probe = world["readonly"] / "probe"
        try:
            probe.mkdir(parents=True)
            probe.rmdir()
            pytest.skip("running as root with no read-only file system: every directory is writable")
        except OSError:
            pass
    work = root / "rows" / case.id
    work.mkdir(parents=True)
    os.chmod(work, 0o777)
    args = case.args({**world, "work": work})  # may place the row's own input files in work
    before = _snapshot(root)
    before_work = _listing(work)
    url = f"http://127.0.0.1:{free_port()}" if case.url == "down" else world["srv"].url
    home = world["home"] / case.id
    python, env = None, dict(case.env)
    if case.as_nobody and nobody_can_run():
        python, extra = nobody_python()
        env.update(extra)
    proc = run_cli(
        *args,
        server=url,
        home=home,
        env=env,
        cwd=root,
        timeout=120,
        preexec_fn=_preexec(case),
        python=python,
    )
    where = f"{case.id}: exit {proc.returncode}, stderr={proc.stderr!r}"
    assert proc.returncode == case.code, where
    assert "Traceback" not in proc.stderr, where
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not PROGRESS.search(ln)]
    assert len(lines) == 1, where
    line = lines[0]
    assert line.startswith("error: "), where
    for needle in case.needles:
        assert needle in line, (where, needle)
    assert proc.stdout == "", where
    for secret in (TEST_KEY, "sk_wrong_0123456789"):
        assert secret not in proc.stdout + proc.stderr
    after = _snapshot(root)
    # nothing lost or damaged: every file that existed is byte-identical, and no target holds a partial
    for name, digest in before.items():
        assert after.get(name) == digest, (where, name)
    new = set(after) - set(before)
    assert not [n for n in new if not n.endswith(PART_SUFFIX)], (where, new)
    assert _listing(work) == before_work, where  # nothing at all appeared in the row's own directory
    if case.id.startswith("download-disk-full"):
        assert not any(p.name == "out.mp4" for p in root.rglob("out.mp4")), where


def test_bad_local_input_sends_nothing(cli, server, clip, tmp_path):
    """A bad file in a batch is reported before any upload starts."""
    log = server.request_log
    before = log.read_text().count("\n") if log and log.exists() else 0
    result = cli("upload", clip, tmp_path / "missing.mp4")
    assert_one_line_error(result, 2, "missing.mp4")
    after = log.read_text() if log and log.exists() else ""
    new = [json.loads(line) for line in after.splitlines()[before:]]
    assert not [r for r in new if r["path"].startswith("/v1/uploads")], new


def test_server_down_names_the_url_after_retries(cli, tmp_path):
    """Nothing listens on the port: exit 8 after the client's retries, naming the URL.

    The client retries connection failures with backoff (about 5-10 s in total here)."""
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("job", "get", "job_x", env={"SOPHON_BASE_URL": url}, timeout=60)
    line = assert_one_line_error(result, 8, url, "cannot reach")
    assert "attempts" in line


def test_keys_never_appear_in_errors(cli):
    secret_key = "sk-very-secret-value-1234567890"
    result = cli("job", "list", env={"SOPHON_API_KEY": secret_key})
    assert_one_line_error(result, 4, secrets=(secret_key,))


def test_ctrl_c_mid_upload_exits_130_and_rerun_resumes(make_server, tmp_path):
    srv = make_server(chunk_size=1 * MB, faults="PUT /v1/uploads/*/parts/*=latency:150ms")
    src = padded_video(tmp_path / "big.mp4", 10 * MB, seed=9)
    digest = sha256_of(src)
    home = tmp_path / "home"
    proc = popen_cli("upload", src, server=srv, home=home)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if db_rows(srv, "SELECT COUNT(*) FROM upload_parts")[0][0] >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out.strip() == ""
    assert sha256_of(src) == digest
    got = db_rows(srv, "SELECT COUNT(*) FROM upload_parts")[0][0]
    assert 0 < got < 10
    again = run_cli("upload", src, server=srv, home=home)
    assert again.returncode == 0, again.stderr
    assert db_rows(srv, "SELECT COUNT(*), MIN(sha256) FROM uploads") == [(1, digest)]


def test_ctrl_c_mid_upload_says_interrupted_and_how_to_resume(make_server, tmp_path):
    srv = make_server(chunk_size=1 * MB, faults="PUT /v1/uploads/*/parts/*=latency:150ms")
    src = padded_video(tmp_path / "big.mp4", 6 * MB, seed=10)
    proc = popen_cli("--no-progress", "upload", src, server=srv, home=tmp_path / "home")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if db_rows(srv, "SELECT COUNT(*) FROM upload_parts")[0][0] >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "again" in lines[0], err
