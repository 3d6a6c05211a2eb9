"""The one ffmpeg command that scores a pair: VMAF, SSIM and PSNR from one libvmaf pass (pure).

Standard preparation, as the VMAF documentation describes it:

* both streams' timestamps reset (``setpts=PTS-STARTPTS``), so an output that starts at a
  different time stamp is compared frame for frame;
* the distorted stream resampled to the reference's frame rate (``fps``) when the rates differ;
* the distorted stream scaled to the reference's resolution with bicubic when the sizes differ
  (an encode with a lower target height is scored at the source's size);
* both converted to one pixel format libvmaf reads (the reference's when it can, else 4:2:0);
* ``n_threads`` = the cores this process may use; ``n_subsample`` scores every Nth frame.

SSIM (``float_ssim``) and PSNR (``psnr``: Y, Cb, Cr) are libvmaf features, so they are computed
on the same prepared frames in the same pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

from sophon_cli.quality.probe import VideoInfo

DEFAULT_MODEL = "vmaf_v0.6.1"
#: models built into libvmaf (and the imageio-ffmpeg binary); the 4k one is for 2160p viewing
MODELS = ("vmaf_v0.6.1", "vmaf_v0.6.1neg", "vmaf_4k_v0.6.1")
LOG_NAME = "vmaf.json"  # written in the run's private temporary directory (the command's cwd)

_LIBVMAF_FORMATS = {
    f"yuv{chroma}p{depth}" for chroma in ("420", "422", "444") for depth in ("", "10le", "12le", "16le")
}


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Preparation:
    """What was done to the streams before scoring (reported with the scores)."""

    width: int  # the scored resolution (the reference's)
    height: int
    pix_fmt: str
    fps: Fraction | None  # the reference's rate
    scaled: bool  # the distorted stream was scaled to width x height
    rate_matched: bool  # the distorted stream was resampled to fps


def prepare(reference: VideoInfo, distorted: VideoInfo) -> Preparation:
    if reference.pix_fmt in _LIBVMAF_FORMATS:
        pix_fmt = reference.pix_fmt
    else:
        pix_fmt = "yuv420p10le" if reference.high_bit_depth else "yuv420p"
    scaled = (distorted.width, distorted.height) != (reference.width, reference.height)
    rate_matched = bool(reference.fps and distorted.fps and reference.fps != distorted.fps)
    return Preparation(reference.width, reference.height, pix_fmt, reference.fps, scaled, rate_matched)


def _rate(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def filtergraph(prep: Preparation, *, subsample: int, threads: int, model: str) -> str:
    dist = ["setpts=PTS-STARTPTS"]
    if prep.rate_matched and prep.fps:
        dist.append(f"fps={_rate(prep.fps)}")
    if prep.scaled:
        dist.append(f"scale={prep.width}:{prep.height}:flags=bicubic")
    dist.append(f"format={prep.pix_fmt}")
    ref = ["setpts=PTS-STARTPTS", f"format={prep.pix_fmt}"]
    vmaf = ":".join(
        [
            f"model=version={model}",
            "feature=name=psnr|name=float_ssim",
            f"n_threads={threads}",
            f"n_subsample={subsample}",
            "log_fmt=json",
            f"log_path={LOG_NAME}",
            "shortest=1",  # the longer stream's tail (within the duration tolerance) is not scored
        ]
    )
    # libvmaf's first input is the distorted ("main") stream, the second the reference
    return f"[0:v:0]{','.join(dist)}[dis];[1:v:0]{','.join(ref)}[ref];[dis][ref]libvmaf={vmaf}"


def build_command(
    ffmpeg: str,
    reference: VideoInfo,
    distorted: VideoInfo,
    *,
    subsample: int = 1,
    threads: int | None = None,
    model: str = DEFAULT_MODEL,
    progress: bool = True,
) -> tuple[list[str], Preparation]:
    """The argv (run it with the log directory as cwd) and what it does to the streams."""
    prep = prepare(reference, distorted)
    graph = filtergraph(prep, subsample=subsample, threads=threads or default_threads(), model=model)
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats"]
    if progress:
        cmd += ["-progress", "pipe:1", "-stats_period", "0.5"]
    # file: keeps a name with a colon (or one starting with a dash) from being read as a protocol/option
    cmd += ["-i", f"file:{distorted.path.resolve()}", "-i", f"file:{reference.path.resolve()}"]
    cmd += ["-filter_complex", graph, "-an", "-sn", "-dn", "-f", "null", "-"]
    return cmd, prep
