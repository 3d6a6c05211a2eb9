"""Quality scoring: `sophon compare` against the bare ffmpeg libvmaf command on the same pair.

    python benchmarks/quality.py [--seconds 10] [--size 640x360] [--quick] [--runs N]

Generates a reference (testsrc2, x264) and a distorted version of it (scaled to half the height
and encoded at CRF 35, so scoring has to scale it back), then alternates:
  (a) `sophon compare REF DIST --json --threads N`, a whole CLI process (start-up, probing both
      files with PyAV, the ffmpeg child, reading its log, the JSON);
  (b) the bare imageio-ffmpeg binary with the same filtergraph written out by hand: both streams'
      timestamps reset, the distorted one scaled back with bicubic, one pixel format, libvmaf with
      the same model, psnr + float_ssim features, n_threads=N, a JSON log.
Both sides use the same ffmpeg binary and the same thread count (the usable cores); the script
checks that they agree on the mean VMAF (within 0.01).

Last line: {"compare_over_ffmpeg", ...}: the median wall of (a) over that of (b).
Goal: compare_over_ffmpeg <= 1.15.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b  # noqa: E402

MODEL = "vmaf_v0.6.1"


def threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def make_pair(tmp: Path, seconds: float, size: str, fps: int) -> tuple[Path, Path, tuple[int, int]]:
    width, height = (int(x) for x in size.split("x"))
    ref = b.make_clip(tmp / "reference.mp4", seconds=seconds, size=size, fps=fps)
    dist = tmp / "distorted.mp4"
    cmd = [
        b.ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(ref),
        "-vf", f"scale=-2:{height // 2}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "35",
        "-pix_fmt", "yuv420p", str(dist),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return ref, dist, (width, height)


def ffmpeg_command(ref: Path, dist: Path, size: tuple[int, int], n_threads: int, log: Path) -> list[str]:
    """What a user would type to get the same scores from ffmpeg alone."""
    w, h = size
    graph = (
        f"[0:v:0]setpts=PTS-STARTPTS,scale={w}:{h}:flags=bicubic,format=yuv420p[dis];"
        "[1:v:0]setpts=PTS-STARTPTS,format=yuv420p[ref];"
        f"[dis][ref]libvmaf=model=version={MODEL}:feature=name=psnr|name=float_ssim:"
        f"n_threads={n_threads}:log_fmt=json:log_path={log.name}:shortest=1"
    )
    return [
        b.ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
        "-i", str(dist), "-i", str(ref), "-filter_complex", graph, "-an", "-f", "null", "-",
    ]  # fmt: skip


def main() -> None:
    p = b.base_parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=None, help="clip length (default 10; --quick 4)")
    p.add_argument("--size", default="640x360", help="reference resolution (default 640x360)")
    p.add_argument("--fps", type=int, default=25)
    args = p.parse_args()
    seconds = args.seconds or (4 if args.quick else 10)
    runs = args.runs or (2 if args.quick else 3)
    n_threads = threads()

    with b.Workdir(args, "quality") as tmp:
        b.progress(f"generating a {seconds:g} s {args.size} pair")
        ref, dist, size = make_pair(tmp, seconds, args.size, args.fps)
        env = dict(os.environ, SOPHON_HOME=str(tmp / "home"))
        env.pop("SOPHON_DEBUG", None)
        log = tmp / "vmaf-bare.json"
        sophon_cmd = [b.sophon(), "compare", str(ref), str(dist), "--json", "--threads", str(n_threads)]
        scores: dict[str, float] = {}

        def run_sophon() -> b.Run:
            r = b.timed(sophon_cmd, env=env).check("sophon compare")
            scores["sophon"] = json.loads(r.stdout.splitlines()[-1])["vmaf"]["mean"]
            return r

        def run_ffmpeg() -> b.Run:
            r = b.timed(ffmpeg_command(ref, dist, size, n_threads, log), cwd=tmp).check("ffmpeg libvmaf")
            scores["ffmpeg"] = json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"]
            return r

        res = b.alternate([("sophon", run_sophon), ("ffmpeg", run_ffmpeg)], runs, warmup=1)
        frames = round(seconds * args.fps)
        version = b.timed([b.sophon(), "--version"], env=env).check("sophon --version")

    if abs(scores["sophon"] - scores["ffmpeg"]) > 0.01:
        raise SystemExit(f"error: the scores differ: sophon {scores['sophon']}, ffmpeg {scores['ffmpeg']}")
    wall = {k: b.median(r.wall for r in v) for k, v in res.items()}
    cpu = {k: b.median(r.user + r.sys for r in v) for k, v in res.items()}
    rss = {k: max(r.rss_mib for r in v) for k, v in res.items()}
    t = b.Table(
        f"scoring a {seconds:g} s {args.size} pair ({frames} frames, distorted at half height), "
        f"{n_threads} threads, {runs} runs/side (medians)",
        ["side", "wall s", "fps", "CPU s", "peak RSS MiB"],
    )
    t.add("sophon compare --json", wall["sophon"], frames / wall["sophon"], cpu["sophon"], rss["sophon"])
    t.add("ffmpeg -lavfi libvmaf", wall["ffmpeg"], frames / wall["ffmpeg"], cpu["ffmpeg"], rss["ffmpeg"])
    t.add("sophon --version", version.wall, float("nan"), version.user + version.sys, version.rss_mib)
    figures = {
        "benchmark": "quality",
        "seconds": seconds,
        "size": args.size,
        "frames": frames,
        "threads": n_threads,
        "runs": runs,
        "vmaf_mean": round(scores["sophon"], 3),
        "compare_s": round(wall["sophon"], 3),
        "ffmpeg_s": round(wall["ffmpeg"], 3),
        "version_s": round(version.wall, 3),
        "compare_over_ffmpeg": b.ratio(wall["sophon"], wall["ffmpeg"]),
        "compare_peak_rss_mib": round(rss["sophon"], 1),
    }
    notes = [
        b.goal_line("compare_over_ffmpeg", figures["compare_over_ffmpeg"], 1.15),
        f"sophon compare - ffmpeg = {wall['sophon'] - wall['ffmpeg']:.3f} s "
        f"(sophon --version alone: {version.wall:.3f} s)",
    ]
    b.finish(figures, [t], notes)


if __name__ == "__main__":
    main()
