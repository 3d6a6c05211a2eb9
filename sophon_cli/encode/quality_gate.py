"""The quality step of ``sophon encode``: score a downloaded output against its source (VMAF, SSIM,
PSNR with ``sophon_cli.quality``) and, with a minimum VMAF, keep the original when the encode is
below it.

It runs in ``steps.finish`` after the output is downloaded, verified and known to be smaller, and
before the file is called encoded. With ``EncodeOptions.min_vmaf`` a mean VMAF below it is treated
like the no-gain path: the encode is removed, ``--fallback`` decides what is left at the output path
(a copy of the original by default), and the reason starts with ``quality_below_threshold`` and
carries the score. ``check_quality`` alone measures and records without deciding anything.

The score is saved in the cache entry with the sha256 of the output it belongs to, so a rerun never
scores the same output twice, and a rerun under another threshold decides again from the saved
score (``still_stands``). A gate that cannot measure (ffmpeg fails, the durations differ) fails the
file rather than passing an unvetted encode; measuring alone only records that it could not. A
stop while scoring keeps the downloaded, verified encode where it is, unscored (``Context.unscored``
names it for the front end): the cache says ``downloaded`` without a score, so a rerun scores it
and decides, without downloading it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sophon_cli.encode.entry import Result, State
from sophon_cli.encode.results import Unscored

__all__ = ["BELOW_THRESHOLD", "cached_verdict", "check", "check_available", "requested", "still_stands"]

#: how a below-threshold reason begins (machine-readable, also in FileResult.quality_below_threshold)
BELOW_THRESHOLD = "quality_below_threshold"


def requested(options: Any) -> bool:
    return options.min_vmaf is not None or bool(options.check_quality)


def check_available() -> None:
    """Raise QualityUnavailableError now (before any upload) when the ``quality`` extra is missing."""
    from sophon_cli.quality.errors import QualityUnavailableError
    from sophon_cli.quality.scoring import find_ffmpeg

    find_ffmpeg()
    try:
        import av  # noqa: F401
    except ImportError:
        raise QualityUnavailableError("av (PyAV)") from None


def _below(options: Any, vmaf: float | None) -> bool:
    return options.min_vmaf is not None and vmaf is not None and vmaf < options.min_vmaf


def still_stands(ctx: Any, item: Any) -> bool:
    """Whether a finished entry's quality decision holds under this run's options (no scoring)."""
    e = item.entry
    o = ctx.options
    if e.quality_below_threshold:
        # kept the original for a low score: stands while the score is still below the threshold
        return _below(o, e.vmaf)
    if e.result != Result.ENCODED or not requested(o):
        return True
    return e.vmaf is not None and not _below(o, e.vmaf)


def _reason(vmaf: float, threshold: float) -> str:
    return f"{BELOW_THRESHOLD}: VMAF {vmaf:.2f} is below the minimum {threshold:g}"


def _score_is_current(e: Any) -> bool:
    return e.vmaf is not None and e.vmaf_sha256 is not None and e.vmaf_sha256 == e.output_digest


def cached_verdict(ctx: Any, item: Any) -> str | None:
    """Before a download: the fallback reason when the cache already scored this job's output below
    the threshold (a rerun neither downloads nor scores it again), else None."""
    e = item.entry
    if _score_is_current(e) and _below(ctx.options, e.vmaf):
        if not e.quality_below_threshold:
            ctx.save(item, e.state, announce=False, quality_below_threshold=True)
        return _reason(e.vmaf, ctx.options.min_vmaf)
    return None


def check(ctx: Any, item: Any, out: Path) -> str | None:
    """Score ``out`` (unless the cache already has its score); return the fallback reason when it
    is below ``min_vmaf``, else None. Clears a previous below-threshold mark when it now passes."""
    e = item.entry
    o = ctx.options
    if not requested(o):
        return None
    if not _score_is_current(e):
        vmaf = _score(ctx, item, out)
        if vmaf is None:
            return None
    if _below(o, e.vmaf):
        ctx.save(item, State.DOWNLOADED, announce=False, quality_below_threshold=True)
        return _reason(e.vmaf, o.min_vmaf)  # type: ignore[arg-type]
    if e.quality_below_threshold:
        ctx.save(item, State.DOWNLOADED, announce=False, quality_below_threshold=False)
    return None


def _score(ctx: Any, item: Any, out: Path) -> float | None:
    from sophon_cli.quality import QualityError, compare
    from sophon_cli.quality.errors import MediaError

    ctx.event(item, "scoring", output=str(out))

    def progress(done: int, total: int | None) -> None:
        ctx.progress(item, "scoring", done, total)
        ctx.check_stop()

    gated = ctx.options.min_vmaf is not None
    # Until the score is saved this output is "unscored": a stop (Ctrl-C, once or twice) leaves it
    # at the output path, downloaded and verified, with the cache at ``downloaded`` (no score), so
    # the rerun scores it without fetching it again. The encode is the work; the score is extra.
    ctx.unscored[item.key] = Unscored(item.source.display, str(out), bool(item.entry.verified))
    try:
        report = compare(item.source.path, out, on_progress=progress)
    except (QualityError, MediaError) as exc:
        del ctx.unscored[item.key]
        if gated:
            # the file fails (a rerun retries): no unvetted encode stays at the output path
            _remove(out)
            raise QualityError(f"could not measure the quality of the encode: {exc}") from exc
        ctx.event(item, "scoring_failed", reason=str(exc))
        return None
    quality = report.to_dict()
    for key in ("reference", "distorted"):  # paths are in the entry already
        quality.pop(key, None)
    ctx.save(
        item,
        State.DOWNLOADED,
        event="scored",
        vmaf=report.vmaf.mean,
        vmaf_sha256=item.entry.output_digest,
        quality=quality,
    )
    ctx.unscored.pop(item.key, None)
    return report.vmaf.mean


def _remove(out: Path) -> None:
    try:
        out.unlink()
    except FileNotFoundError:
        pass
