"""Probing media with PyAV and building the ffmpeg (libx265) command for a profile."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

MP4_AUDIO_COPY = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "gif", "bmp_pipe", "tiff_pipe")

PRESETS = {"espresso": "fast", "cortado": "medium", "americano": "slow"}
CRF_STANDARD = 28
CRF_HQ = 22


class ProbeError(Exception):
    pass


def _rate_text(rate: Fraction | None) -> str | None:
    if not rate:
        return None
    value = float(rate)
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text


def probe(path: Path) -> dict[str, Any]:
    """Duration, dimensions, frame rate, codecs of ``path``; ProbeError if it is not a video."""
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # av raises several InvalidDataError flavours
        raise ProbeError("not a readable media file") from exc
    try:
        fmt = container.format.name or ""
        videos = [s for s in container.streams.video]
        if not videos or any(fmt.startswith(f) for f in IMAGE_FORMATS):
            raise ProbeError("the file has no video stream")
        v = videos[0]
        cc = v.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise ProbeError("the video stream has no dimensions")
        duration = None
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        if (not duration) and container.duration:
            duration = container.duration / 1_000_000
        rate = v.average_rate or v.guessed_rate or v.base_rate
        frames = int(v.frames or 0)
        if not frames and duration and rate:
            frames = int(round(duration * float(rate)))
        if not duration or duration <= 0:
            raise ProbeError("the video stream has no duration")
        pix_fmt = cc.format.name if cc.format is not None else None
        audio = [s for s in container.streams.audio]
        return {
            "format": fmt,
            "duration": duration,
            "width": width,
            "height": height,
            "frame_rate": _rate_text(rate),
            "fps": float(rate) if rate else None,
            "frames": frames or None,
            "video_codec": cc.name,
            "pix_fmt": pix_fmt,
            "audio_codec": audio[0].codec_context.name if audio else None,
        }
    finally:
        container.close()


def parse_profile(profile: str) -> tuple[str, bool, bool]:
    """``sophon-cortado-hq-10bit`` -> ("cortado", hq=True, ten_bit=True)."""
    parts = profile.split("-")[1:]
    return parts[0], "hq" in parts, "10bit" in parts


def auto_profile(info: dict[str, Any]) -> str:
    """The concrete profile ``sophon-auto`` runs: cortado for small/short sources, else espresso.

    Never a 10-bit variant: auto output is 8-bit Main.
    """
    pixels = int(info.get("width") or 0) * int(info.get("height") or 0)
    duration = float(info.get("duration") or 0)
    if pixels <= 1920 * 1080 and duration <= 600:
        return "sophon-cortado"
    return "sophon-espresso"


def output_dims(width: int, height: int, target_height: int | None) -> tuple[int, int] | None:
    """Scaled (w, h) — aspect kept, even, never upscaled — or None when no scaling is needed."""
    if target_height and target_height < height:
        h = target_height - target_height % 2
        w = int(round(width * h / height / 2)) * 2
        return max(w, 2), max(h, 2)
    if width % 2 or height % 2:
        return width - width % 2, height - height % 2
    return None


def ffmpeg_command(
    ffmpeg: str,
    src: Path,
    dst: Path,
    *,
    profile: str,
    info: dict[str, Any],
    container: str,
    audio: bool,
    target_height: int | None,
    progress: bool = True,
    realtime: bool = False,
) -> list[str]:
    family, hq, ten_bit = parse_profile(profile)
    preset = PRESETS.get(family, "medium")
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    if progress:
        cmd += ["-nostats", "-progress", "pipe:1"]
    if realtime:  # read the source at its own frame rate (the local server's test hook)
        cmd.append("-re")
    cmd += ["-i", str(src), "-map", "0:v:0"]
    want_audio = bool(audio and info.get("audio_codec"))
    if want_audio:
        cmd += ["-map", "0:a:0?"]
    dims = output_dims(int(info["width"]), int(info["height"]), target_height)
    if dims:
        cmd += ["-vf", f"scale={dims[0]}:{dims[1]}"]
    cmd += [
        "-c:v",
        "libx265",
        "-preset",
        preset,
        "-crf",
        str(CRF_HQ if hq else CRF_STANDARD),
        "-pix_fmt",
        "yuv420p10le" if ten_bit else "yuv420p",
        "-profile:v",
        "main10" if ten_bit else "main",
        "-x265-params",
        "log-level=error",
    ]
    if want_audio:
        if container == "mkv" or info.get("audio_codec") in MP4_AUDIO_COPY:
            cmd += ["-c:a", "copy"]
        else:
            cmd += ["-c:a", "aac", "-b:a", "128k"]
    else:
        cmd += ["-an"]
    cmd += ["-sn", "-dn"]
    if container == "mp4":
        cmd += ["-tag:v", "hvc1", "-movflags", "+faststart", "-f", "mp4"]
    else:
        cmd += ["-f", "matroska"]
    cmd.append(str(dst))
    return cmd


def output_info(path: Path) -> dict[str, Any]:
    """Facts about an encoded output: width, height, codec, audio presence."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return {
            "width": int(v.codec_context.width),
            "height": int(v.codec_context.height),
            "video_codec": v.codec_context.name,
            "audio": len(c.streams.audio) > 0,
        }
