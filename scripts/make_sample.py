"""Generate examples/sample.mp4: a few seconds of a moving test pattern, H.264, well under 1 MB.

The clip is our own making (ffmpeg's lavfi ``testsrc2`` source), so it can ship with the project
and ``sophon encode --local examples/sample.mp4`` works on a fresh clone. It is encoded at a
generous H.264 quality so the local server's HEVC encode shows a real saving.

    python scripts/make_sample.py [OUTPUT]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "examples" / "sample.mp4"


def ffmpeg_args(output: Path) -> list[str]:
    return [
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=480x270:rate=24:duration=4",
        "-vf",
        "format=yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        "medium",
        "-crf",
        "16",
        "-g",
        "48",
        "-bitexact",
        "-map_metadata",
        "-1",
        "-movflags",
        "+faststart",
        str(output),
    ]


def main(argv: list[str] | None = None) -> int:
    import imageio_ffmpeg

    args = sys.argv[1:] if argv is None else argv
    output = Path(args[0]) if args else DEFAULT_OUTPUT
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), *ffmpeg_args(output)], check=True)
    size = output.stat().st_size
    if size >= 1_000_000:
        print(f"error: {output} is {size} bytes; the sample must stay under 1 MB", file=sys.stderr)
        return 1
    print(f"{output} ({size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
