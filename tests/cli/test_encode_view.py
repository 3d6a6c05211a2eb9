"""The live display of `sophon encode` on a terminal: the real CLI under a pseudo-terminal (`pty`)
against a real local server, its output rendered by a terminal emulator (pyte) and asserted on as
screen text, frame by frame. Plus: the README's screen capture has the renderer's shape."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, TEST_KEY

pyte = pytest.importorskip("pyte")

# every label a live file line can show; "fallback" only for the moment between an encode failing and the
# original being kept (a loaded machine draws a frame then)
LABELS = (
    "uploading", "queued", "encoding", "downloading", "uploaded", "encoded", "job created", "hashing",
    "downloaded", "fallback",
)  # fmt: skip
ETA = r"eta \d:\d\d:\d\d"


class Terminal:
    """One run of the real CLI on a pseudo-terminal of ``cols`` x ``lines``: ``frames`` are the
    screen's text after every chunk the program wrote (trailing blanks stripped)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, *, cols: int, lines: int = 30):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, cols, 0, 0))
        env = dict(env, COLUMNS=str(cols), LINES=str(lines), TERM="xterm")
        env.pop("NO_COLOR", None)
        env.pop("SOPHON_DEBUG", None)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(cols, lines)
        self.stream = pyte.ByteStream(self.screen)
        self.frames: list[str] = []
        self.raw = b""

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip()

    def read(self, until=None, timeout: float = 120) -> bool:
        """Read output until ``until(frame)`` is true (True) or the program ends (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return False
                if not chunk:
                    return False
                self.raw += chunk
                self.stream.feed(chunk)
                self.frames.append(self.text())
                if until is not None and until(self.frames[-1]):
                    return True
            elif self.proc.poll() is not None:
                return False
        raise AssertionError(f"no such frame within {timeout}s; last:\n{self.text()}")

    def finish(self, timeout: float = 120) -> int:
        self.read(timeout=timeout)
        os.close(self.master)
        return self.proc.wait(timeout=30)


def encode_on_terminal(server, work: Path, home: Path, files: list[Path], *args: str, cols: int) -> Terminal:
    env = dict(os.environ, SOPHON_HOME=str(home), SOPHON_BASE_URL=server.url, SOPHON_API_KEY=TEST_KEY)
    argv = [sys.executable, "-m", "sophon_cli", "encode", *[f.name for f in files], "-o", "out", *args]
    return Terminal(argv, env, work, cols=cols)


def lines_with(frames: list[str], pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [line for frame in frames for line in frame.splitlines() if rx.search(line)]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Three 4-second clips encoded with -j 3 on a one-worker server whose part uploads take
    0.3 s each and whose encodes run in real time: every phase stays on screen long enough."""
    from sophon_cli.server.runner import LocalServer
    from tests.conftest import _make_clip

    root = tmp_path_factory.mktemp("encode-view")
    work = root / "work"
    clips = [_make_clip(work / f"clip{i}.mp4", seconds=4, size=f"{160 + 16 * i}x120") for i in range(3)]
    srv = LocalServer(
        root / "server",
        api_keys=[TEST_KEY],
        chunk_size=8192,
        workers=1,
        faults="PUT /v1/uploads/*/parts/*=latency:300ms",
    )
    srv.start()
    try:
        term = encode_on_terminal(
            srv, work, root / "home", clips,
            "-j", "3", "--part-concurrency", "1", "--metadata", "sophon_local_realtime=true",
            cols=100,
        )  # fmt: skip
        code = term.finish(timeout=180)
    finally:
        srv.stop()
    assert code == 0, term.text()
    return term


def test_upload_shows_bytes_rate_and_eta(batch):
    uploading = lines_with(batch.frames, r"^  clip\d\.mp4 +uploading ")
    assert uploading, batch.frames[-1]
    # bytes done/total, rate and ETA, in binary units like the rest of the CLI
    full = [ln for ln in uploading if re.search(r"\d+\.\d/\d+\.\d KiB  \d+\.\d KiB/s  " + ETA, ln)]
    assert full, uploading
    assert not re.search(rb"\d (kB|MB)\b", batch.raw)


def test_a_queued_job_shows_queued_not_encoding_zero(batch):
    queued = lines_with(batch.frames, r"^  clip\d\.mp4 +queued\b")
    assert queued, batch.frames
    assert all("%" not in ln for ln in queued), queued
    assert not lines_with(batch.frames, r"encoding +\S* *0%")


def test_encoding_shows_the_servers_fps_and_eta(batch):
    encoding = lines_with(batch.frames, r"^  clip\d\.mp4 +encoding .*\d+%  \d+ fps  " + ETA)
    assert encoding, lines_with(batch.frames, "encoding")


def test_the_overall_bar_moves_before_any_file_finishes(batch):
    overall = [re.search(r"^3 files +0/3 done .* (\d+)%", ln) for ln in lines_with(batch.frames, r"^3 files")]
    percents = [int(m.group(1)) for m in overall if m]
    assert percents and max(percents) > 30, percents  # uploads and encodes count, weighted by size
    assert lines_with(batch.frames, r"^3 files +0/3 done .*%  " + ETA)  # with an overall ETA
    final = lines_with(batch.frames[-1:], r"^3 files")
    assert final and re.search(r"3/3 done .* 100%", final[-1]), batch.frames[-1]


def test_the_summary_is_a_table_on_the_terminal(batch):
    screen = batch.frames[-1]
    assert re.search(r"3 files, [\d.]+ [KMG]?i?B -> [\d.]+ [KMG]?i?B, saved [\d.]+%", screen)
    header = next(ln for ln in screen.splitlines() if "┃" in ln)
    assert [c.strip() for c in header.split("┃")] == [
        "file",
        "source",
        "output",
        "saved",
        "profile",
        "result",
    ]
    rows = [ln for ln in screen.splitlines() if "│" in ln]
    assert [r.split("│")[0].strip() for r in rows] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]


LONG = ["holiday-footage-from-the-lake-district-2025.mp4", "interview_with_the_director_final_v2.mp4"]


def test_sixty_columns_never_wrap_mid_word(make_server, make_clip, tmp_path):
    """Long names and a long result at 60 columns: every live line and every table row stays one
    line; names are cut at the front, columns dropped by priority."""
    work = tmp_path / "work"
    clips = [make_clip(work / name, seconds=1, size=f"{160 + 16 * i}x120") for i, name in enumerate(LONG)]
    srv = make_server(tmp_path / "server", chunk_size=8192, faults="PUT /v1/uploads/*/parts/*=latency:300ms")
    term = encode_on_terminal(
        srv, work, tmp_path / "home", clips,
        "--part-concurrency", "1", "--metadata", "sophon_local_fail=the encoder refused this source",
        cols=60,
    )  # fmt: skip
    assert term.finish() == 0, term.text()
    live = re.compile(r"^(2 files +\d/2 done|  \S+ +(" + "|".join(LABELS) + r"))\b")
    shown = set()
    for frame in term.frames:
        for line in frame.splitlines():
            if "┃" in line or "│" in line or "━━━╇" in line or "files," in line or not line.strip():
                continue
            # a live line, whole: a wrapped one would start with the rest of a word or figure
            assert live.match(line), (line, frame)
            if line.startswith("  "):
                shown.add(line.split()[0])
    assert shown == {"…ict-2025.mp4", "…final_v2.mp4"}, shown  # cut at the front, the end kept
    assert lines_with(term.frames, r"uploading .*KiB/s  " + ETA)  # at 60 columns too
    screen = term.frames[-1].splitlines()
    header = next(ln for ln in screen if "┃" in ln)
    assert [c.strip() for c in header.split("┃")][0] == "file" and "result" in header
    rows = [ln for ln in screen if "│" in ln]
    assert len(rows) == 2, screen  # one line per file
    for row, name in zip(rows, LONG, strict=True):
        cells = [c.strip() for c in row.split("│")]
        assert cells[0].startswith("…") and name.endswith(cells[0][1:]), cells
        assert cells[-1].startswith("original kept (") and cells[-1].endswith("…"), cells
    assert all(len(ln) <= 60 for ln in screen)


def test_a_failed_file_is_reported_above_the_live_lines(make_server, make_clip, tmp_path):
    work = tmp_path / "work"
    clips = [make_clip(work / f"v{i}.mp4", size=f"{160 + 16 * i}x120") for i in range(2)]
    srv = make_server(tmp_path / "server", chunk_size=8192)
    reason = "the encoder refused [bold]this[/bold] source"
    term = encode_on_terminal(
        srv, work, tmp_path / "home", clips, "--fallback", "fail", "--metadata", f"sophon_local_fail={reason}",
        cols=80,
    )  # fmt: skip
    assert term.finish(timeout=90) == 7, term.text()
    screen = term.text()
    for name in ("v0.mp4", "v1.mp4"):  # a line each, the server's text shown as text (no markup)
        assert re.search(rf"^{name}: failed: .*refused \[bold\]this\[/bold\] source", screen, re.M), screen
    assert re.search(r"^2 files +2/2 done", screen, re.M), screen


def test_interrupted_before_anything_finished_prints_no_empty_table(make_server, make_clip, tmp_path):
    work = tmp_path / "work"
    clip = make_clip(work / "slow.mp4")
    srv = make_server(tmp_path / "server", chunk_size=8192)
    term = encode_on_terminal(
        srv, work, tmp_path / "home", [clip], "--metadata", "sophon_local_delay=60", cols=80
    )
    assert term.read(until=lambda frame: re.search(r"slow\.mp4 +(queued|encoding)", frame), timeout=60)
    os.kill(term.proc.pid, signal.SIGINT)
    assert term.finish(timeout=60) == 130
    screen = term.text()
    assert "┃" not in screen and "FILE" not in screen, screen  # no table header, not even a plain one
    assert "slow.mp4" not in screen.split("1 file", 1)[-1].split("interrupted")[0], screen
    after = [ln for ln in screen.splitlines() if ln.strip() and not ln.startswith("1 file ")]
    assert len(after) == 1 and "interrupted" in after[0], screen


def test_file_names_are_shown_as_text_never_markup_or_escape_sequences(make_server, make_clip, tmp_path):
    """Valid file names that look like rich markup ("a[/b]c.mp4" once crashed the run after the work
    with 'unexpected MarkupError', "x[bold]y.mp4" lost its brackets) or hold a terminal sequence
    (an OSC title) are drawn as plain text, in the live lines and in the summary table."""
    import shutil

    work = tmp_path / "work"
    base = make_clip(work / "base.mp4")
    (work / "a[").mkdir()
    names = ["a[/b]c.mp4", "x[bold]y.mp4", "t\x1b]0;pwned\x07.mp4"]
    for name in names:
        shutil.copyfile(base, work / name)
    base.unlink()
    srv = make_server(tmp_path / "server", chunk_size=8192)
    env = dict(
        os.environ, SOPHON_HOME=str(tmp_path / "home"), SOPHON_BASE_URL=srv.url, SOPHON_API_KEY=TEST_KEY
    )
    argv = [sys.executable, "-m", "sophon_cli", "encode", *names, "-o", "out", "--profile", "sophon-espresso"]
    term = Terminal(argv, env, work, cols=100)
    code = term.finish(timeout=120)
    screen = term.text()
    assert code == 0, screen
    assert "Traceback" not in screen and "MarkupError" not in screen and "unexpected" not in screen, screen
    table = screen.split("saved", 1)[-1]
    assert re.search(r"^ a\[/b\]c\.mp4 +│", table, re.M), screen
    assert re.search(r"^ x\[bold\]y\.mp4 +│", table, re.M), screen
    assert b"\x1b]0;pwned" not in term.raw, term.raw[-2000:]
    assert re.search(r"^ t(0;pwned)?\.mp4 +│", table, re.M), screen
    piped = subprocess.run(  # the plain lines (stderr) and the tab-separated table (stdout)
        [*argv[:-4], "-o", "out2", "--profile", "sophon-espresso"],
        env=env, cwd=work, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stderr + piped.stdout and "\x07" not in piped.stderr + piped.stdout
    assert "a[/b]c.mp4: done: encoded" in piped.stderr, piped.stderr


# -- the README's screen capture -------------------------------------------------------------------


def readme_capture() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- encode-capture -->\n```text\n(.*?)```", text, re.S)
    assert m, "README.md has no encode screen capture (```text after <!-- encode-capture -->)"
    return m.group(1).splitlines()


def test_readme_capture_has_the_renderers_shape():
    """The README shows a live frame and the end of an `encode` of three files. Re-rendering the
    same facts with the renderer gives the same lines (bars masked: their fill is not in the text)."""
    import io

    from rich.console import Console

    from sophon_cli.cli import encode_view as view
    from sophon_cli.cli.output import Output
    from sophon_cli.encode import FileResult
    from sophon_cli.encode.entry import Result

    lines = readme_capture()
    assert lines[0].startswith("$ sophon encode ")
    width = 80  # the README says: an 80-column terminal
    assert all(len(ln) <= width for ln in lines)
    bar = re.compile(r"[━╸╺]+")
    label_rx = re.compile(r" (\d+/\d+ done|" + "|".join(LABELS) + r")\b")

    frames: list[list] = []
    live_lines = []
    for ln in lines[1:]:
        m = label_rx.search(ln)
        if "│" in ln or not m or not re.match(r"^(\d+ files? |  \S)", ln):
            continue
        name, label, rest = ln[: m.start()].rstrip(), m.group(1), ln[m.end() :]
        figures = [(t, 0) for t in bar.sub("", rest).strip().split("  ") if t]
        if not name.startswith("  "):
            frames.append([])
        frames[-1].append((name, label, 0.5 if bar.search(rest) else view.NO_BAR, figures))
        live_lines.append(ln)
    assert [len(f) for f in frames] == [4, 1], frames  # a frame with three files, and the last
    hint = max(len(name) for frame in frames for name, *_ in frame)
    rendered = []
    for frame in frames:
        console = Console(file=io.StringIO(), width=width, force_terminal=True, record=True)
        for row in view.fit_lines(frame, width, name_hint=hint):
            console.print(row)
        rendered += console.export_text(styles=False).splitlines()
    assert [bar.sub("BAR", r.rstrip()) for r in rendered] == [
        bar.sub("BAR", ln.rstrip()) for ln in live_lines
    ]

    title = next(ln for ln in lines if re.match(r"^ *3 files, ", ln))
    assert re.match(r"^ *3 files, [\d.]+ [KMG]?i?B -> [\d.]+ [KMG]?i?B, saved [\d.]+%$", title), title
    header = next(ln for ln in lines if "┃" in ln)
    columns = [c.strip() for c in header.split("┃")]
    full = ["file", "source", "output", "saved", "vmaf", "profile", "result"]  # summary_table's
    assert columns[0] == "file" and columns[-1] == "result"
    assert columns == [c for c in full if c in columns], columns  # some dropped, order kept
    rows = [[c.strip() for c in ln.split("│")] for ln in lines if "│" in ln]
    assert len(rows) == 3 and all(len(r) == len(columns) for r in rows)
    out = Output(stdout=io.StringIO(), stderr=io.StringIO(), is_tty=True, color=False)
    out.console.width = width
    priority, shrink = view.SUMMARY_PRIORITY, view.SUMMARY_SHRINK
    view.fitted_table(out, columns, rows, title=title.strip(), priority=priority, shrink=shrink)
    table = [_plain(t).rstrip() for t in out.stdout.getvalue().splitlines()]
    start = lines.index(title)
    assert table == [ln.rstrip() for ln in lines[start : start + len(table)]]
    # and the whole summary, from the same facts, drops the same columns at that width
    results = [
        FileResult(
            file=r[0], result=Result(r[-1]), source_bytes=_bytes(r[1]), output_bytes=_bytes(r[2]),
            saved_percent=float(r[3].rstrip("%")), profile="sophon-auto", effective_profile="sophon-cortado",
        )
        for r in rows
    ]  # fmt: skip
    out = Output(stdout=io.StringIO(), stderr=io.StringIO(), is_tty=True, color=False)
    out.console.width = width
    view.summary_table(out, results)
    assert [
        c.strip() for c in next(_plain(t) for t in out.stdout.getvalue().splitlines() if "┃" in t).split("┃")
    ] == columns


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _bytes(text: str) -> int:
    num, unit = text.split()
    return round(float(num) * {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit])


# -- the pure parts --------------------------------------------------------------------------------


def test_rate_and_eta_and_byte_pairs():
    from sophon_cli.cli.encode_view import Rate, bytes_pair, format_eta

    now = [100.0]
    rate = Rate(window=10.0, clock=lambda: now[0])
    assert rate.per_second() is None
    rate.add(0)
    now[0] += 2
    rate.add(4 << 20)
    assert rate.per_second() == pytest.approx(2 << 20)  # 2 MiB/s
    now[0] += 2  # nothing arrived since: the rate falls
    assert rate.per_second() == pytest.approx(1 << 20)
    assert format_eta(62) == "0:01:02" and format_eta(3 * 3600 + 5) == "3:00:05"
    assert format_eta(None) is None and format_eta(float("nan")) is None and format_eta(-1) is None
    assert bytes_pair(1.5 * (1 << 20), 3 << 20) == "1.5/3.0 MiB"
    assert bytes_pair(512 << 10, 3 << 20) == "512.0 KiB/3.0 MiB"
    assert bytes_pair(10, None) == "10 B"


def test_summary_columns_are_dropped_by_priority():
    from sophon_cli.cli.encode_view import SUMMARY_PRIORITY, SUMMARY_SHRINK, fit_columns

    widths = {"file": 30, "source": 9, "output": 9, "saved": 6, "profile": 26, "result": 40}
    assert list(fit_columns(widths, 200, SUMMARY_PRIORITY, SUMMARY_SHRINK)) == list(widths)
    kept = fit_columns(widths, 80, SUMMARY_PRIORITY, SUMMARY_SHRINK)
    assert list(kept) == ["file", "source", "output", "saved", "result"]  # profile goes first
    assert sum(kept.values()) + 3 * (len(kept) - 1) + 2 <= 80
    kept = fit_columns(widths, 40, SUMMARY_PRIORITY, SUMMARY_SHRINK)
    assert list(kept) == ["file", "result"]  # then source, output, saved
    assert kept == {"file": 18, "result": 17}  # the room shared, narrowest first


@pytest.mark.parametrize("width", [20, 40, 60, 61, 80, 100, 132, 200])
def test_live_lines_fit_any_width(width):
    import io

    from rich.console import Console

    from sophon_cli.cli.encode_view import fit_lines

    lines = [
        ("12 files", "3/12 done", 0.4, [("40%", 0), ("eta 0:01:02", 1)]),
        ("  " + "very-long-directory-name/" * 3 + "clip.mp4", "uploading", 0.2,
         [("123.4/456.7 MiB", 3), ("12.3 MiB/s", 2), ("eta 0:00:27", 1)]),
        ("  b.mp4", "encoding", 0.5, [("50%", 0), ("120 fps", 2), ("eta 0:00:03", 1)]),
        ("  c.mp4", "queued", -1.0, []),
    ]  # fmt: skip
    console = Console(file=io.StringIO(), width=width, force_terminal=True, record=True)
    for row in fit_lines(lines, width, name_hint=12):
        console.print(row)
    text = console.export_text(styles=False).splitlines()
    assert len(text) == len(lines)  # one screen line each: nothing wrapped
    assert all(len(t.rstrip()) <= max(width, 20) for t in text), text
    assert text[1].startswith("  …" if width < 150 else "  very-long") and "uploading" in text[1]
    if width >= 40:
        assert "/clip.mp4 " in text[1]
    if width >= 60:
        assert "eta 0:00:27" in text[1] and "eta 0:00:03" in text[2]  # ETAs go last
    if width >= 100:
        assert "123.4/456.7 MiB  12.3 MiB/s  eta 0:00:27" in text[1]
