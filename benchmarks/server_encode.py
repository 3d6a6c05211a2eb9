"""Local server job wall (create -> completed) vs the same ffmpeg command run directly.

    python benchmarks/server_encode.py [--quick] [--runs N] [--clip FILE] [--profile P]

The clip is uploaded once to a `sophon server` child process. Then, alternating:
  (a) job:    POST /v1/jobs for that upload; the job wall is the server's own record,
              completed_at - created_at (awaited by reading the server's SQLite store every
              20 ms, so no HTTP polling competes with the encode for the 2 cores);
  (b) ffmpeg: the very command the server's worker runs for that job
              (sophon_cli.server.media.ffmpeg_command with the job's effective profile and the
              upload's probe), run directly on the same source file.
Clips: the repo's examples/sample.mp4 (480x270, 4 s) and a tiny generated 160x120 1 s clip, which
shows the fixed per-job cost. --quick runs the tiny clip only.

Last line: {"job_over_ffmpeg", ...} (for the main clip). Goal: job_over_ffmpeg <= 1.15.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def measure(srv: b.BenchServer, clip: Path, profile: str, runs: int, tmp: Path) -> dict:
    from sophon_cli.server import media

    upload_id = srv.upload(clip)
    db = srv.db()
    row = db.execute("SELECT path, probe FROM uploads WHERE id=?", (upload_id,)).fetchone()
    src, info = Path(row["path"]), json.loads(row["probe"])
    first = srv.wait_job(srv.create_job(upload_id, profile)["id"])  # warm-up, and learn the profile
    if first["status"] != "completed":
        raise SystemExit(f"error: the warm-up job ended {first['status']}: {first.get('error')}")
    effective = first.get("effective_profile_id") or profile
    out = tmp / f"direct-{clip.stem}.mp4"
    cmd = media.ffmpeg_command(
        b.ffmpeg(), src, out, profile=effective, info=info, container="mp4", audio=False, target_height=None
    )

    def job() -> dict:
        jid = srv.create_job(upload_id, profile)["id"]
        # wait by reading the server's store (no HTTP polling competing with the encode for CPU)
        deadline = time.monotonic() + 600
        while True:
            r = db.execute(
                "SELECT status, created_at, started_at, completed_at FROM jobs WHERE id=?", (jid,)
            ).fetchone()
            if r["status"] in ("completed", "failed", "canceled") or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if r["status"] != "completed":
            raise SystemExit(f"error: job {jid} ended {r['status']}")
        return {
            "wall": r["completed_at"] - r["created_at"],
            "queue": r["started_at"] - r["created_at"],
        }

    def direct() -> dict:
        r = b.timed(cmd).check("ffmpeg")
        out.unlink(missing_ok=True)
        return {"wall": r.wall, "queue": 0.0}

    res = b.alternate([("job", job), ("ffmpeg", direct)], runs)
    db.close()
    jw = b.median(x["wall"] for x in res["job"])
    fw = b.median(x["wall"] for x in res["ffmpeg"])
    return {
        "clip": clip.name,
        "info": f"{info['width']}x{info['height']}, {info['duration']:.1f} s, {info.get('frame_rate')} fps",
        "profile": effective,
        "job_s": jw,
        "ffmpeg_s": fw,
        "queue_s": b.median(x["queue"] for x in res["job"]),
        "overhead_s": jw - fw,
        "ratio": b.ratio(jw, fw),
        "job_runs": [round(x["wall"], 3) for x in res["job"]],
        "ffmpeg_runs": [round(x["wall"], 3) for x in res["ffmpeg"]],
    }


def main() -> None:
    p = b.base_parser(__doc__.splitlines()[0])
    p.add_argument("--clip", type=Path, default=None, help="main clip (default examples/sample.mp4)")
    p.add_argument("--profile", default="sophon-auto", help="job profile (default sophon-auto)")
    args = p.parse_args()
    runs = args.runs or (3 if args.quick else 7)

    with b.Workdir(args, "encode") as tmp:
        tiny = b.make_clip(tmp / "tiny.mp4")
        clips = [tiny]
        if not args.quick:
            main_clip = args.clip or REPO / "examples" / "sample.mp4"
            if not main_clip.is_file():
                main_clip = b.make_clip(tmp / "clip480.mp4", seconds=4, size="480x270", fps=24)
            clips = [main_clip, tiny]
        with b.BenchServer(tmp / "server") as srv:
            rows = [measure(srv, c, args.profile, runs, tmp) for c in clips]

    t = b.Table(
        f"job wall (server create -> completed) vs direct ffmpeg, {runs} alternating runs (medians)",
        ["clip", "source", "profile", "job s", "ffmpeg s", "overhead ms", "queue ms", "job/ffmpeg"],
    )
    for r in rows:
        t.add(
            r["clip"],
            r["info"],
            r["profile"],
            r["job_s"],
            r["ffmpeg_s"],
            r["overhead_s"] * 1e3,
            r["queue_s"] * 1e3,
            r["ratio"],
        )
    main_row = rows[0]
    figures = {
        "benchmark": "server_encode",
        "runs": runs,
        "clip": main_row["clip"],
        "job_s": round(main_row["job_s"], 3),
        "ffmpeg_s": round(main_row["ffmpeg_s"], 3),
        "overhead_ms": round(main_row["overhead_s"] * 1e3, 1),
        "job_over_ffmpeg": main_row["ratio"],
    }
    if len(rows) > 1:
        figures["job_over_ffmpeg_tiny"] = rows[1]["ratio"]
        figures["overhead_tiny_ms"] = round(rows[1]["overhead_s"] * 1e3, 1)
    notes = [b.goal_line(f"job_over_ffmpeg ({main_row['clip']})", figures["job_over_ffmpeg"], 1.15)]
    notes += [f"runs {r['clip']}: job {r['job_runs']} ffmpeg {r['ffmpeg_runs']}" for r in rows]
    b.finish(figures, [t], notes)


if __name__ == "__main__":
    main()
