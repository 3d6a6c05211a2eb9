"""Measure what an encode did to picture quality: VMAF, SSIM and PSNR in one ffmpeg pass.

    from sophon_cli.quality import compare
    report = compare("talk.mov", "talk.mp4", subsample=5)
    report.vmaf.mean, report.vmaf.p1, report.ssim, report.psnr_y

Usable without typer or rich. ffmpeg comes from imageio-ffmpeg (its static build has libvmaf with
the built-in models) and the files are probed with PyAV: both are the ``quality`` extra
(``pip install 'sophon-cli[quality]'``); without them ``compare`` raises QualityUnavailableError.
Neither is imported until a comparison runs.

Modules: ``probe`` (VideoInfo), ``command`` (the ffmpeg command, pure), ``report`` (QualityReport,
reading libvmaf's log), ``scoring`` (``compare``), ``errors``.
"""

from __future__ import annotations

from sophon_cli.quality.command import DEFAULT_MODEL, MODELS
from sophon_cli.quality.errors import (
    DurationMismatchError,
    MediaError,
    QualityError,
    QualityUnavailableError,
)
from sophon_cli.quality.report import QualityReport, VmafScore
from sophon_cli.quality.scoring import DEFAULT_DURATION_TOLERANCE, compare

__all__ = [
    "DEFAULT_DURATION_TOLERANCE",
    "DEFAULT_MODEL",
    "MODELS",
    "DurationMismatchError",
    "MediaError",
    "QualityError",
    "QualityReport",
    "QualityUnavailableError",
    "VmafScore",
    "compare",
]
