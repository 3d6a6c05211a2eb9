"""What the comparison needs to know about a video: its first video stream's size, rate, duration.

Read with PyAV (the ``quality`` extra), which opens the container without decoding it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from sophon_cli.quality.errors import MediaError, QualityUnavailableError

# demuxers PyAV reports for still images: a picture has a "video" stream but is not a video
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "gif", "bmp_pipe", "tiff_pipe")
_HIGH_DEPTH = re.compile(r"p(9|10|12|14|16)(le|be)$")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    duration: float  # seconds
    fps: Fraction | None  # average frame rate, when the container knows one
    frames: int | None  # frame count from the container, else duration x fps
    pix_fmt: str | None
    codec: str | None

    @property
    def high_bit_depth(self) -> bool:
        return bool(self.pix_fmt and _HIGH_DEPTH.search(self.pix_fmt))


def check_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it names a readable regular file, else MediaError (one line)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise MediaError(f"no such file: {p}", path=p, hint="check the path") from None
    except OSError as exc:
        raise MediaError(f"cannot read {p}: {exc.strerror or exc}", path=p, hint="check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(f"{p} is a directory, not a video file", path=p, hint="name a video file")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{p} is not a regular file", path=p, hint="name a video file")
    if not os.access(p, os.R_OK):
        raise MediaError(f"cannot read {p}: permission denied", path=p, hint="check its permissions")
    return p


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """The first video stream of ``path``; MediaError for a missing file, a non-video, no video."""
    p = check_file(path)
    try:
        import av
    except ImportError:
        raise QualityUnavailableError("av (PyAV)") from None
    try:
        container = av.open(str(p))
    except Exception:  # PyAV raises several InvalidDataError/OSError flavours
        raise MediaError(f"{p} is not a video file ffmpeg can read", path=p, hint="check the file") from None
    try:
        fmt = container.format.name or ""
        videos = list(container.streams.video)
        if not videos or any(fmt.startswith(f) for f in IMAGE_FORMATS):
            raise MediaError(f"{p} has no video stream", path=p, hint="name a video file")
        v = videos[0]
        cc = v.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise MediaError(f"the video stream of {p} has no dimensions", path=p, hint="check the file")
        duration = None
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        if not duration and container.duration:
            duration = container.duration / 1_000_000
        if not duration or duration <= 0:
            raise MediaError(f"the video stream of {p} has no duration", path=p, hint="check the file")
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = Fraction(rate) if rate else None
        frames = int(v.frames or 0) or (int(round(duration * float(fps))) if fps else 0)
        return VideoInfo(
            path=p,
            width=width,
            height=height,
            duration=duration,
            fps=fps,
            frames=frames or None,
            pix_fmt=cc.format.name if cc.format is not None else None,
            codec=cc.name,
        )
    finally:
        container.close()
