"""The scores of one comparison, read from libvmaf's JSON log (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sophon_cli.quality.errors import QualityError


@dataclass(frozen=True)
class VmafScore:
    mean: float
    harmonic_mean: float
    p1: float  # 1st percentile of the per-frame scores (the worst 1% of frames are below it)
    min: float
    max: float


@dataclass(frozen=True)
class QualityReport:
    reference: str
    distorted: str
    vmaf: VmafScore
    ssim: float  # mean SSIM of the luma plane, 0..1
    ssim_min: float
    psnr_y: float  # mean PSNR in dB (libvmaf caps identical frames at 60 dB for 8-bit)
    psnr_cb: float
    psnr_cr: float
    frames_scored: int
    frames_compared: int
    subsample: int
    width: int  # the scored resolution (the reference's)
    height: int
    distorted_width: int
    distorted_height: int
    scaled: bool
    fps: str | None  # the reference's frame rate, e.g. "30000/1001"
    rate_matched: bool
    pix_fmt: str
    model: str
    threads: int
    seconds: float  # wall time of the scoring pass

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> QualityReport:
        fields = dict(doc)
        fields["vmaf"] = VmafScore(**fields["vmaf"])
        return cls(**fields)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _pooled(doc: dict[str, Any], name: str) -> dict[str, float]:
    pooled = (doc.get("pooled_metrics") or {}).get(name)
    if not isinstance(pooled, dict) or "mean" not in pooled:
        raise QualityError(f"libvmaf wrote no {name} scores")
    return pooled


def scores_from_log(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields of a QualityReport that come from libvmaf's JSON log."""
    frames = doc.get("frames") or []
    per_frame = [f["metrics"]["vmaf"] for f in frames if "vmaf" in (f.get("metrics") or {})]
    if not per_frame:
        raise QualityError("libvmaf scored no frames (is one of the videos empty?)")
    vmaf = _pooled(doc, "vmaf")
    ssim = _pooled(doc, "float_ssim")
    return {
        "vmaf": VmafScore(
            mean=round(vmaf["mean"], 6),
            harmonic_mean=round(vmaf["harmonic_mean"], 6),
            p1=round(percentile(per_frame, 1), 6),
            min=round(vmaf["min"], 6),
            max=round(vmaf["max"], 6),
        ),
        "ssim": round(ssim["mean"], 6),
        "ssim_min": round(ssim["min"], 6),
        "psnr_y": round(_pooled(doc, "psnr_y")["mean"], 6),
        "psnr_cb": round(_pooled(doc, "psnr_cb")["mean"], 6),
        "psnr_cr": round(_pooled(doc, "psnr_cr")["mean"], 6),
        "frames_scored": len(per_frame),
    }
