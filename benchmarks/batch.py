"""Batch encode: `sophon encode` of many tiny clips through a local server.

    python benchmarks/batch.py [--files 100] [--quick] [--runs N] [--workers W]

Generates N distinct 1-second 160x120 clips (one ffmpeg run, segmented), starts a `sophon server`
child with --request-log, and runs `sophon encode <clips> -o <dir>` with a fresh SOPHON_HOME (the
defaults: -j 2, 4 parts per file). Reported:
  * wall time of the whole command and its peak RSS,
  * HTTP requests per file, by route, from the server's own request log,
  * the sum of the server's own encode times (job started_at -> completed_at, from its store) and
    wall_over_server_encode = wall / that sum: how much the client and the protocol add on top of
    the encodes themselves (with one server worker the encodes run one after another, so 1.0 is
    the floor).
With --runs > 1 every run gets a fresh server and cache (no replays), and medians are reported.

Last line: {"requests_per_file", "wall_over_server_encode", ...}. Goal: requests_per_file <= 12.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b  # noqa: E402


def one_run(tmp: Path, clips: list[Path], workers: int, index: int) -> dict:
    run_dir = tmp / f"run{index}"
    log = run_dir / "requests.jsonl"
    out = run_dir / "out"
    with b.BenchServer(run_dir / "server", request_log=log, workers=workers) as srv:
        env = srv.cli_env(run_dir / "home")
        r = b.timed([b.sophon(), "encode", *map(str, clips), "-o", str(out), "--no-progress"], env=env)
        r.check("sophon encode")
        db = srv.db()
        jobs = db.execute(
            "SELECT status, created_at, started_at, completed_at, final_artifact FROM jobs"
        ).fetchall()
        db.close()
    made = [p for p in out.rglob("*") if p.is_file()]
    if len(made) != len(clips):
        raise SystemExit(f"error: {len(made)} outputs for {len(clips)} clips")
    routes: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        routes[rec["route"]] += 1
        statuses[rec["status"]] += 1
    encode = sum(j["completed_at"] - j["started_at"] for j in jobs if j["started_at"] and j["completed_at"])
    return {
        "wall": r.wall,
        "rss_mib": r.rss_mib,
        "cpu": r.user + r.sys,
        "routes": routes,
        "statuses": statuses,
        "jobs": len(jobs),
        "completed": sum(1 for j in jobs if j["status"] == "completed"),
        "encode": encode,
    }


def main() -> None:
    p = b.base_parser(__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=None, help="number of clips (default 100; --quick 10)")
    p.add_argument("--workers", type=int, default=1, help="server encode workers (default 1)")
    args = p.parse_args()
    n = args.files or (10 if args.quick else 100)
    runs = args.runs or 1

    with b.Workdir(args, "batch") as tmp:
        b.progress(f"generating {n} clips")
        clips = b.make_clips(tmp / "clips", n)
        results = []
        for i in range(runs):
            results.append(one_run(tmp, clips, args.workers, i))
            b.progress(f"run {i + 1}/{runs}: {results[-1]['wall']:.2f} s")

    wall = b.median(r["wall"] for r in results)
    encode = b.median(r["encode"] for r in results)
    routes = results[len(results) // 2]["routes"]  # the request mix is the same in every run
    total = b.median(sum(r["routes"].values()) for r in results)
    t1 = b.Table(
        f"sophon encode of {n} clips (160x120, 1 s), {runs} run(s), server workers={args.workers}",
        ["figure", "value"],
    )
    t1.add("wall s", wall)
    t1.add("per file ms", wall / n * 1000)
    t1.add("client peak RSS MiB", max(r["rss_mib"] for r in results))
    t1.add("client CPU s", b.median(r["cpu"] for r in results))
    t1.add("sum of server encode times s", encode)
    t1.add("wall / server encode", wall / encode if encode else float("nan"))
    t1.add("HTTP requests", total)
    t1.add("requests per file", total / n)
    t1.add("HTTP statuses", " ".join(f"{k}:{v}" for k, v in sorted(results[0]["statuses"].items())))
    t2 = b.Table("requests per file by route (server request log)", ["route", "requests", "per file"])
    for route, count in routes.most_common():
        t2.add(route, count, count / n)
    figures = {
        "benchmark": "batch",
        "files": n,
        "runs": runs,
        "wall_s": round(wall, 3),
        "server_encode_sum_s": round(encode, 3),
        "wall_over_server_encode": b.ratio(wall, encode),
        "requests_per_file": round(total / n, 2),
        "requests_per_file_by_route": {k: round(v / n, 2) for k, v in routes.most_common()},
        "client_peak_rss_mib": round(max(r["rss_mib"] for r in results), 1),
    }
    notes = [
        b.goal_line("requests_per_file", figures["requests_per_file"], 12),
        f"wall_over_server_encode = {figures['wall_over_server_encode']:.3f} (1.0 = the client adds nothing)",
    ]
    b.finish(figures, [t1, t2], notes)


if __name__ == "__main__":
    main()
