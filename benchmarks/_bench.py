"""Shared harness of the benchmark scripts (standard library only, plus the project's own server).

What every script gets from here:

* ``timed(cmd)``: run a child process, return its wall time and whole-process peak RSS (from
  ``os.wait4``'s rusage, i.e. what ``/usr/bin/time -v`` reports as "Maximum resident set size").
* ``alternate(sides, rounds)``: run the sides a, b, c, a, b, c, ... so background load on this
  shared machine hits every side alike; the scripts report medians.
* ``BenchServer``: a real ``sophon server`` child process on 127.0.0.1 with a free port, its own data
  dir and a throwaway API key (passed by environment, never printed), plus a tiny stdlib HTTP
  client for setting up fixtures (uploads, jobs) without going through the code under test.
* ``make_clip``/``make_clips``: tiny generated videos (ffmpeg lavfi testsrc2).
* ``Table`` and ``finish``: the readable table, then the one JSON line the scripts end with.

``sophon`` is located next to the running interpreter (``sys.executable``'s directory), so the
scripts measure the install they are run with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN_DIR = Path(sys.executable).parent
MIB = 1024 * 1024
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

# Measure what an installed user sees: bytecode cached. With PYTHONDONTWRITEBYTECODE set (as in some
# CI/dev shells) an editable install recompiles every sophon_cli module from source in every
# process (~30-60 ms per start) while site-packages (typer, httpx...) have their .pyc from pip.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def precompile() -> None:
    """Write the .pyc files of the sophon_cli package (as pip does at install time)."""
    import importlib.util

    spec = importlib.util.find_spec("sophon_cli")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: sophon_cli is not installed in this interpreter; run `pip install -e '.[bench]'`")
    for where in spec.submodule_search_locations:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", where], check=False, stdout=subprocess.DEVNULL
        )


# ---------------------------------------------------------------------------------------------
# locating tools
# ---------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """``name`` from the running interpreter's venv, else from PATH; exit with a hint if absent."""
    candidate = BIN_DIR / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    sys.exit(
        f"error: `{name}` not found next to {sys.executable} or on PATH; run `pip install -e '.[bench]'`"
    )


def sophon() -> str:
    return tool("sophon")


def ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        sys.exit("error: imageio-ffmpeg is missing; run `pip install -e '.[server,bench]'`")
    return imageio_ffmpeg.get_ffmpeg_exe()


# ---------------------------------------------------------------------------------------------
# running and timing children
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float  # seconds
    rss_mib: float  # peak resident set of the child (and any children it waited for)
    rc: int
    stdout: str
    stderr: str
    user: float = 0.0  # CPU seconds
    sys: float = 0.0
    t0: float = 0.0  # wall-clock time (time.time()) just before the fork
    rchar: int | None = None  # bytes read by the whole process tree (/proc/<pid>/io), if readable

    def check(self, what: str) -> Run:
        if self.rc != 0:
            tail = (self.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            raise SystemExit(f"error: {what} exited {self.rc}: {tail}")
        return self


def timed(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 3600.0,
) -> Run:
    """Run ``cmd``; wall time from just before fork to the child's exit, CPU from ``wait4``.

    Peak RSS comes from ``/usr/bin/time`` (GNU time, ``%M``) when installed: a child forked from
    this Python process would inherit its resident pages in ``ru_maxrss`` (Linux accounts the
    pre-exec image), so the measured command is started by the small ``time`` process instead.
    Without it, ``wait4``'s ``ru_maxrss`` is used (an over-estimate by up to this process's RSS).

    Bytes read (``rchar``): the child is left a zombie for a moment (``waitid(WNOWAIT)``) and its
    ``/proc/<pid>/io`` read before it is reaped. A zombie's counters include every thread and every
    child it reaped, so with ``/usr/bin/time`` in between this is the measured command's total
    (plus what ``time`` itself reads, a constant that a baseline run subtracts).
    """
    gnu_time = GNU_TIME
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as tf,
    ):
        argv = list(cmd)
        if gnu_time:
            argv = [gnu_time, "-q", "-f", "%M", "-o", tf.name, *argv]
        t0 = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        deadline = start + timeout
        while True:
            exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if exited is not None and exited.si_pid == proc.pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
                break
            time.sleep(0.0005)
        wall = time.perf_counter() - start
        rchar = _rchar(proc.pid)
        pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        rss_kib = float(usage.ru_maxrss)  # KiB on Linux
        if gnu_time:
            text = tf.read().strip().splitlines()
            if text and text[-1].strip().isdigit():
                rss_kib = float(text[-1].strip())
        return Run(
            wall=wall,
            rss_mib=rss_kib / 1024.0,
            rc=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            user=usage.ru_utime,
            sys=usage.ru_stime,
            t0=t0,
            rchar=rchar,
        )


def _rchar(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def drop_caches() -> bool:
    """``sync`` and drop the page cache (Linux, root only). False when not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
    except OSError:
        return False
    return True


class ColdCache:
    """``--cold``: drop the page cache before every measured run, where that is permitted.

    ``permitted`` is None until the first try, then whether it worked (said once if not)."""

    def __init__(self, asked: bool) -> None:
        self.asked = bool(asked)
        self.permitted: bool | None = None

    def before(self) -> None:
        if not self.asked:
            return
        ok = drop_caches()
        if self.permitted is None:
            self.permitted = ok
            if not ok:
                progress("--cold: dropping the page cache is not permitted here; runs are warm")


def hash_after(command: str, hashed: int = 2) -> str:
    """A peer program: run ``command`` (a Python list expression over sys.argv), then print the
    sha256 of ``sys.argv[hashed]`` (by default the file it wrote) read in 1 MiB blocks."""
    return f"""
import hashlib, subprocess, sys
subprocess.run({command}, check=True)
h = hashlib.sha256()
with open(sys.argv[{hashed}], "rb") as fh:
    while True:
        block = fh.read(1 << 20)
        if not block:
            break
        h.update(block)
print(h.hexdigest())
"""


def python_child(code: str, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run a short Python program in a fresh interpreter (the one running this script)."""
    return timed([sys.executable, "-c", code, *args], env=env)


def alternate(sides: Sequence[tuple[str, Callable[[], Any]]], rounds: int, *, warmup: int = 0) -> dict:
    """Run a, b, c, a, b, c, ... ``rounds`` times (after ``warmup`` unrecorded rounds)."""
    results: dict[str, list[Any]] = {name: [] for name, _ in sides}
    for r in range(warmup + rounds):
        for name, fn in sides:
            value = fn()
            if r >= warmup:
                results[name].append(value)
        progress(f"round {r + 1}/{warmup + rounds} done" + (" (warm-up)" if r < warmup else ""))
    return results


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``64k``, ``1048576`` -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in "KMGT" else t
    try:
        value = int(float(number) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1G, 256M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return value


def random_file(path: Path, size: int, block: int = 8 * MIB) -> Path:
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(block, left)
            fh.write(os.urandom(n))
            left -= n
    return path


def random_video(path: Path, size: int) -> Path:
    """A valid video whose payload is random bytes: 1 MiB gray frames of /dev/urandom, stream-copied
    (rawvideo in Matroska). The upload contract probes what it receives, so a plain random file
    would be rejected at complete; this one is the same incompressible bytes in a real container."""
    frame = 1024 * 1024
    frames = max(1, size // frame)
    cmd = [
        ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "gray", "-s", "1024x1024", "-r", "25", "-i", "/dev/urandom",
        "-frames:v", str(frames), "-c:v", "copy", "-f", "matroska", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used so far (Linux /proc;
    nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def sha256_of(path: Path, block: int = MIB) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def make_clip(path: Path, *, seconds: float = 1, size: str = "160x120", fps: int = 15) -> Path:
    cmd = [
        ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


def make_clips(directory: Path, count: int, *, size: str = "160x120", fps: int = 15) -> list[Path]:
    """``count`` distinct 1-second clips from one ffmpeg run (testsrc2 segmented at keyframes)."""
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [
        ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={count}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", str(fps),
        "-force_key_frames", "expr:gte(t,n_forced*1)",
        "-f", "segment", "-segment_time", "1", "-reset_timestamps", "1",
        str(directory / "clip%03d.mp4"),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    clips = sorted(directory.glob("clip*.mp4"))
    if len(clips) != count:
        raise SystemExit(f"error: expected {count} clips, ffmpeg made {len(clips)}")
    return clips


# ---------------------------------------------------------------------------------------------
# the local server
# ---------------------------------------------------------------------------------------------


@dataclass
class BenchServer:
    """``sophon server`` in a child process on 127.0.0.1, port picked by the OS."""

    data_dir: Path
    request_log: Path | None = None
    workers: int = 1
    extra_args: list[str] = field(default_factory=list)
    key: str = field(default_factory=lambda: "sk_bench_" + secrets.token_hex(16), repr=False)
    url: str = ""
    proc: subprocess.Popen | None = None

    def start(self) -> BenchServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self.data_dir / "server.json"
        state.unlink(missing_ok=True)
        cmd = [sophon(), "server", "--port", "0", "--data-dir", str(self.data_dir)]
        cmd += ["--workers", str(self.workers), "--no-request-log-lines", *self.extra_args]
        if self.request_log is not None:
            cmd += ["--request-log", str(self.request_log)]
        env = dict(os.environ, SOPHON_SERVER_API_KEYS=self.key)
        self._log = open(self.data_dir / "server.stderr", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self._log, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"error: `sophon server` exited {self.proc.returncode}; see {self._log.name}"
                )
            try:
                info = json.loads(state.read_text())
                if info.get("pid") == self.proc.pid:
                    self.url = info["url"]
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("error: `sophon server` did not start within 60 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far (nan where unknown)."""
        return process_cpu(self.proc.pid) if self.proc is not None else float("nan")

    def cli_env(self, home: Path) -> dict[str, str]:
        """Environment for a ``sophon`` child talking to this server (key by env, never argv)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHON_")}
        env.update(SOPHON_HOME=str(home), SOPHON_BASE_URL=self.url, SOPHON_API_KEY=self.key)
        return env

    # -- a tiny independent HTTP client for fixtures -------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        idem: bool | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        if method == "POST" if idem is None else idem:
            headers["Idempotency-Key"] = "bench-" + secrets.token_hex(12)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, doc = self.api(method, path, body, **kw)
        if not 200 <= status < 300:
            code = doc.get("error", {}).get("code") if isinstance(doc, dict) else doc
            raise SystemExit(f"error: fixture request {method} {path.split('?')[0]} -> {status} {code}")
        return doc

    def upload(self, path: Path, mime: str = "video/mp4") -> str:
        size = path.stat().st_size
        session = self.ok(
            "POST", "/v1/uploads", {"file_name": path.name, "file_size": size, "mime_type": mime}
        )
        chunk = session["chunk_size"]
        with open(path, "rb") as fh:
            for n in range(session["total_chunks"]):
                fh.seek(n * chunk)
                self.ok("PUT", f"/v1/uploads/{session['id']}/parts/{n}", data=fh.read(chunk))
        self.ok("POST", f"/v1/uploads/{session['id']}/complete")
        return session["id"]

    def output_url(self, job_id: str) -> str:
        """The signed download URL the server redirects ``GET /v1/jobs/{id}/output`` to."""
        import http.client
        from urllib.parse import urljoin, urlsplit

        u = urlsplit(self.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        try:
            conn.request("GET", f"/v1/jobs/{job_id}/output", headers={"Authorization": f"Bearer {self.key}"})
            resp = conn.getresponse()
            resp.read()
            location = resp.getheader("Location")
        finally:
            conn.close()
        if resp.status != 302 or not location:
            raise SystemExit(f"error: GET /v1/jobs/{{id}}/output -> {resp.status}, not a redirect")
        return urljoin(self.url + "/", location)

    def create_job(self, upload_id: str, profile: str = "sophon-espresso") -> dict[str, Any]:
        body = {"source": {"type": "upload", "upload_id": upload_id}, "profile": profile}
        return self.ok("POST", "/v1/jobs", body)

    def wait_job(self, job_id: str, timeout: float = 600.0, poll: float = 0.02) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.ok("GET", f"/v1/jobs/{job_id}")
            if job["status"] in ("completed", "failed", "canceled"):
                return job
            if time.monotonic() > deadline:
                raise SystemExit(f"error: job {job_id} still {job['status']} after {timeout:g} s")
            time.sleep(poll)

    def db(self):
        """A read/write sqlite3 connection to the server's store (benchmark-only fixtures)."""
        import sqlite3

        conn = sqlite3.connect(self.data_dir / "sophon.db", timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------


def sophon_version() -> str:
    """The measured install: version, plus the git commit when run from a checkout."""
    try:
        from importlib.metadata import version

        text = version("sophon-cli")
    except Exception:
        text = "unknown"
    repo = Path(__file__).resolve().parent.parent
    if (repo / ".git").exists():
        r = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        if r.returncode == 0:
            text += f" ({r.stdout.strip()})"
    return text


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load1": round(os.getloadavg()[0], 2),
    }


class Table:
    def __init__(self, title: str, columns: Sequence[str]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def add(self, *cells: Any) -> None:
        self.rows.append([_cell(c) for c in cells])

    def render(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        line = "  ".join("-" * w for w in widths)
        out = [self.title, line]
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(self.columns, widths, strict=True))
            )
        )
        out.append(line)
        for r in self.rows:
            out.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(r, widths, strict=True))
                )
            )
        out.append(line)
        return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def goal_line(name: str, value: float, limit: float, *, unit: str = "") -> str:
    ok = value <= limit
    return f"{name} = {value:.3f}{unit}  (goal <= {limit:g}{unit}: {'met' if ok else 'MISSED'})"


def finish(figures: dict[str, Any], tables: Sequence[Table], notes: Sequence[str] = ()) -> None:
    """Print the tables and notes, then the JSON line (always the last line of stdout)."""
    for t in tables:
        print(t.render())
        print()
    for n in notes:
        print(n)
    doc = dict(figures)
    doc["sophon"] = sophon_version()
    doc["machine"] = machine()
    doc["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(doc, sort_keys=False), flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    precompile()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller sizes / fewer runs (for development)")
    p.add_argument("--runs", type=int, default=None, help="measured rounds per side (default per script)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (for inspection)")
    p.add_argument("--tmp", default=None, help="where to put the temporary directory (default: $TMPDIR)")
    return p


class Workdir:
    """A temporary directory removed at exit unless ``--keep``."""

    def __init__(self, args: argparse.Namespace, prefix: str) -> None:
        self.keep = args.keep
        self.path = Path(tempfile.mkdtemp(prefix=f"sophon-bench-{prefix}-", dir=args.tmp))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            progress(f"kept {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)
