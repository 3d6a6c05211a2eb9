"""`sophon compare REFERENCE DISTORTED`: VMAF, SSIM and PSNR of an encode against its source.

Parse -> ``sophon_cli.quality.compare`` -> render. One ffmpeg pass (libvmaf with its psnr and
float_ssim features); a progress bar on a TTY (frames done / total, fps, ETA), a table on a
terminal (tab-separated when piped), one JSON object with ``--json``. Bad input (a missing file, a
non-video, no video stream, durations further apart than ``--duration-tolerance``) is one line and
exit 2; a missing ``quality`` extra or an ffmpeg failure is one line and exit 1. Ctrl-C stops ffmpeg
and exits 130 saying that nothing was kept (compare has no cache: a rerun starts over).
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

import typer

from sophon_cli.cli.context import get_ctx
from sophon_cli.quality.command import DEFAULT_MODEL, MODELS


def _model(value: str) -> str:
    if value not in MODELS:
        raise typer.BadParameter(f"unknown model {value!r}; use one of {', '.join(MODELS)}")
    return value


def compare_command(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(metavar="REFERENCE", help="The original (source) video.")],
    distorted: Annotated[str, typer.Argument(metavar="DISTORTED", help="The encode to score against it.")],
    subsample: Annotated[
        int,
        typer.Option("--subsample", metavar="N", min=1, help="Score every Nth frame (faster on long files)."),
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option("--threads", metavar="N", min=1, help="libvmaf threads [default: the usable cores]."),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            metavar="vmaf_v0.6.1|vmaf_v0.6.1neg|vmaf_4k_v0.6.1",
            callback=_model,
            help="Built-in VMAF model.",
        ),
    ] = DEFAULT_MODEL,
    duration_tolerance: Annotated[
        float,
        typer.Option(
            "--duration-tolerance",
            metavar="SECONDS",
            min=0.0,
            help="Largest accepted difference of the two durations.",
        ),
    ] = 0.5,
) -> None:
    """Score an encode against its source: VMAF (mean, harmonic mean, 1% low, min), SSIM, PSNR."""
    out = get_ctx(ctx).out
    try:
        report = _score(out, reference, distorted, subsample, threads, model, duration_tolerance)
    except KeyboardInterrupt:
        # compare keeps nothing between runs (no cache, no partial scores): there is nothing to
        # resume, and nothing was written
        from sophon_cli.cli.shared import Interrupted

        raise Interrupted(INTERRUPTED) from None
    _render(out, report)


#: the one line after a Ctrl-C (exit 130)
INTERRUPTED = "interrupted; nothing was scored or saved (running it again scores from the start)"


def _score(
    out: Any,
    reference: str,
    distorted: str,
    subsample: int,
    threads: int | None,
    model: str,
    duration_tolerance: float,
) -> Any:
    from sophon_cli.quality import DurationMismatchError, compare

    with out.progress(transfer=False) as progress:
        task = progress.add("scoring", None)
        t0 = time.monotonic()

        def on_progress(done: int, total: int | None) -> None:
            fps = done / max(time.monotonic() - t0, 1e-6)
            shown_total = max(total, done) if total else None
            of = f"/{shown_total}" if shown_total else ""
            progress.update(
                task,
                completed=done,
                total=shown_total,
                description=f"scoring {done}{of} frames, {fps:.0f} fps",
            )

        try:
            report = compare(
                reference,
                distorted,
                subsample=subsample,
                threads=threads,
                model=model,
                duration_tolerance=duration_tolerance,
                on_progress=on_progress,
            )
        except DurationMismatchError as exc:
            needed = math.ceil(abs(exc.reference - exc.distorted) * 10 + 1) / 10  # > the difference
            exc.hint = (
                "compare the matching source and output, or accept the difference with "
                f"--duration-tolerance {needed:g}"
            )
            raise
        progress.done(task)
    return report


def _render(out: Any, report: Any) -> None:
    if out.json:
        out.emit(report.to_dict())
        return
    v = report.vmaf
    every = f" (every {report.subsample}th)" if report.subsample > 1 else ""
    rows = [
        ("VMAF mean", f"{v.mean:.2f}"),
        ("VMAF harmonic mean", f"{v.harmonic_mean:.2f}"),
        ("VMAF 1% low", f"{v.p1:.2f}"),
        ("VMAF min", f"{v.min:.2f}"),
        ("SSIM", f"{report.ssim:.4f}"),
        ("PSNR Y", f"{report.psnr_y:.2f} dB"),
        ("PSNR Cb", f"{report.psnr_cb:.2f} dB"),
        ("PSNR Cr", f"{report.psnr_cr:.2f} dB"),
        ("frames scored", f"{report.frames_scored} of {report.frames_compared}{every}"),
    ]
    out.table(["metric", "value"], rows)
    if report.scaled:
        out.notice(
            f"note: the distorted video ({report.distorted_width}x{report.distorted_height}) was scaled "
            f"to {report.width}x{report.height} (bicubic) for scoring"
        )
    if report.rate_matched:
        out.notice(f"note: the distorted video was resampled to the reference's {report.fps} fps")
