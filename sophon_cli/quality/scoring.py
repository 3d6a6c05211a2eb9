"""``compare(reference, distorted)``: probe both, run the one ffmpeg pass, read the scores."""

from __future__ import annotations

import functools
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from sophon_cli.childenv import child_environment
from sophon_cli.quality.command import DEFAULT_MODEL, MODELS, build_command, default_threads
from sophon_cli.quality.errors import DurationMismatchError, QualityError, QualityUnavailableError
from sophon_cli.quality.probe import VideoInfo, probe
from sophon_cli.quality.report import QualityReport, scores_from_log

DEFAULT_DURATION_TOLERANCE = 0.5  # seconds
DEFAULT_STALL_TIMEOUT = 120.0  # seconds without a progress report from ffmpeg

ProgressCallback = Callable[[int, "int | None"], None]


def find_ffmpeg() -> str:
    """The ffmpeg binary of imageio-ffmpeg (the bundled static one has libvmaf and its models).

    ``IMAGEIO_FFMPEG_EXE`` wins, as in imageio-ffmpeg. The bundled binary is found and checked
    (``-version``) here, in a child environment without ``SOPHON_*`` variables:
    ``imageio_ffmpeg.get_ffmpeg_exe()`` runs that check with this process's whole environment, the
    API key included. Only when there is no working bundled binary is imageio-ffmpeg asked (it
    then looks for a conda or system ffmpeg).
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        raise QualityUnavailableError("imageio-ffmpeg") from None
    explicit = os.environ.get("IMAGEIO_FFMPEG_EXE")
    if explicit:
        return explicit
    bundled = _bundled_ffmpeg()
    if bundled is not None:
        return bundled
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:  # no binary for this platform and none on IMAGEIO_FFMPEG_EXE
        raise QualityError(f"no ffmpeg binary found: {exc}", hint="set IMAGEIO_FFMPEG_EXE") from None


@functools.lru_cache(maxsize=1)
def _bundled_ffmpeg() -> str | None:
    try:
        from importlib.resources import files

        candidates = sorted(
            str(entry)
            for entry in files("imageio_ffmpeg.binaries").iterdir()
            if entry.name.startswith("ffmpeg") and not entry.name.endswith((".md", ".py"))
        )
    except (ModuleNotFoundError, OSError, TypeError):
        return None
    return next((exe for exe in candidates if runs(exe)), None)


def runs(exe: str) -> bool:
    """Whether ``exe -version`` exits 0 (run without any ``SOPHON_*`` variable, 30 s at most)."""
    try:
        subprocess.run(
            [exe, "-version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_environment(),
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def check_durations(reference: VideoInfo, distorted: VideoInfo, tolerance: float) -> None:
    if abs(reference.duration - distorted.duration) > tolerance:
        raise DurationMismatchError(reference.duration, distorted.duration, tolerance)


def compare(
    reference: str | os.PathLike[str],
    distorted: str | os.PathLike[str],
    *,
    subsample: int = 1,
    threads: int | None = None,
    model: str = DEFAULT_MODEL,
    duration_tolerance: float = DEFAULT_DURATION_TOLERANCE,
    on_progress: ProgressCallback | None = None,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ffmpeg: str | None = None,
) -> QualityReport:
    """Score ``distorted`` against ``reference``: VMAF, SSIM and PSNR in one ffmpeg pass.

    ``subsample`` scores every Nth frame; ``threads`` defaults to the usable cores.
    ``on_progress(frames_done, frames_total_or_None)`` is called from this thread about twice a
    second. Raises MediaError / DurationMismatchError (bad input), QualityUnavailableError (the
    extra is missing), QualityError (ffmpeg failed or made no progress for ``stall_timeout`` s).
    """
    if subsample < 1:
        raise ValueError("subsample must be >= 1")
    if model not in MODELS:
        raise ValueError(f"unknown VMAF model {model!r}; known: {', '.join(MODELS)}")
    if threads is not None and threads < 1:
        raise ValueError("threads must be >= 1")
    ref = probe(reference)
    dis = probe(distorted)
    check_durations(ref, dis, duration_tolerance)
    exe = ffmpeg or find_ffmpeg()
    threads = threads or default_threads()
    cmd, prep = build_command(exe, ref, dis, subsample=subsample, threads=threads, model=model)
    total = ref.frames
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sophon-quality-") as tmp:
        compared = _run(cmd, Path(tmp), total=total, on_progress=on_progress, stall_timeout=stall_timeout)
        try:
            doc = json.loads((Path(tmp) / "vmaf.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise QualityError(f"libvmaf wrote no readable log: {exc}") from None
    scores = scores_from_log(doc)
    return QualityReport(
        reference=str(ref.path),
        distorted=str(dis.path),
        frames_compared=compared if compared else scores["frames_scored"] * subsample,
        subsample=subsample,
        width=prep.width,
        height=prep.height,
        distorted_width=dis.width,
        distorted_height=dis.height,
        scaled=prep.scaled,
        fps=None if prep.fps is None else str(prep.fps),
        rate_matched=prep.rate_matched,
        pix_fmt=prep.pix_fmt,
        model=model,
        threads=threads,
        seconds=round(time.monotonic() - started, 3),
        **scores,
    )


def _child_group() -> dict:
    """ffmpeg in its own process group, so a terminal's Ctrl-C reaches only us and we stop it
    (``_run``'s ``finally``). Not its own session: a new session is a new scheduler autogroup,
    which halved ffmpeg's share of a loaded machine. An exit that skips ``finally`` (SIGKILL, the
    second Ctrl-C's immediate exit) still ends it: its next progress line (every 0.5 s) goes to a
    pipe nobody reads, and SIGPIPE stops it."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # pragma: no cover - Python 3.10


def _clean(line: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in line).strip()


def _run(
    cmd: list[str],
    cwd: Path,
    *,
    total: int | None,
    on_progress: ProgressCallback | None,
    stall_timeout: float,
) -> int:
    """Run ffmpeg; report ``frame=`` progress; return the frames it pushed through the graph."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_environment(),  # no SOPHON_* variable (the key) reaches ffmpeg
        **_child_group(),
    )
    errors: deque[str] = deque(maxlen=20)

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            text = _clean(raw.decode("utf-8", "replace"))
            if text:
                errors.append(text)

    reader = threading.Thread(target=drain_stderr, name="sophon-ffmpeg-stderr", daemon=True)
    reader.start()
    frames = 0
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                if not sel.select(timeout=stall_timeout):
                    raise QualityError(
                        f"ffmpeg made no progress for {stall_timeout:g} s; stopped it",
                        hint="check the files and the machine's load",
                    )
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    key, _, value = line.decode("ascii", "replace").strip().partition("=")
                    if key == "frame" and value.isdigit():
                        frames = int(value)
                        if on_progress is not None:
                            on_progress(frames, total)
        rc = proc.wait()
        reader.join(timeout=5)
        if rc != 0:
            detail = errors[-1] if errors else f"exit status {rc}"
            raise QualityError(f"ffmpeg could not score the videos: {detail}")
        return frames
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
