"""Upload throughput: `sophon upload` vs the official SDK vs the limit proxy (cp + sha256).

    python benchmarks/upload.py [--size 1G|4G] [--cold] [--quick] [--runs N]

Against one `sophon server` on loopback, alternating runs of
  (a) cli:   `sophon upload --new FILE` (one read pass: every block hashed and handed to one of 4
             parts in flight; then the server's sha256 and size are checked against the local ones),
  (b) sdk:   the official sophon-sdk `upload_file(concurrency=4)` (no local hash, no verification),
  (c) proxy: `cp FILE <server data dir>` then a hashlib sha256 of the file, in one child process,
  (d) start: `sophon --version` (the baseline for the start-up and bytes-read figures).
Each side is a separate process (fresh SOPHON_HOME for every CLI run): wall time, CPU and bytes
read come from the process itself (wait4, /proc/<pid>/io), peak RSS from GNU time.

Figures:
  cli_over_proxy, cli_over_sdk   ratios of median wall times;
  cli_peak_rss_mib               the largest peak RSS of the CLI over its runs;
  read_over_size                 (rchar of the upload - rchar of `sophon --version`) / file size,
                                 median over runs: 1.0 means every byte was read once;
  first_part_s                   (start of the first PUT .../parts/N in the server's request log
                                 - the moment the CLI process was forked) - median wall time of
                                 `sophon --version`, median over runs;
  cli_server_cpu_s, sdk_server_cpu_s  CPU the server process used during each upload (median).
--cold drops the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) before every run of every
side, where permitted (root on Linux); the JSON says whether it was.

The file is random bytes in a real container (rawvideo frames in Matroska): the server probes
what it receives at complete, so a bare random file would be rejected; the bytes are just as
incompressible. Everything is written under a temporary directory that is removed at the end.

Last line: {"cli_over_proxy", "cli_over_sdk", "cli_peak_rss_mib", "read_over_size", "first_part_s", ...}.
Goals: cli_over_proxy <= 1.3, cli_over_sdk <= 1.0, cli_peak_rss_mib <= 96, read_over_size <= 1.02,
first_part_s <= 0.15.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b  # noqa: E402

SDK_UPLOAD = r"""
import os, sys
import sophon_sdk
from sophon_sdk.helpers import upload_file
cfg = sophon_sdk.Configuration(host=os.environ["BENCH_URL"], access_token=os.environ["BENCH_KEY"])
with sophon_sdk.ApiClient(cfg) as client:
    res = upload_file(sophon_sdk.UploadsApi(client), sys.argv[1], file_name=os.path.basename(sys.argv[1]),
                      mime_type="video/x-matroska", concurrency=4)
print(res.upload_id)
"""

PROXY = b.hash_after('["cp", sys.argv[1], sys.argv[2]]', hashed=1)  # cp, then hash the source


def first_part_start(log: Path, since: float) -> float | None:
    """Wall-clock start of the first part PUT the server logged after ``since`` (ts is the end)."""
    first = None
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("method") != "PUT" or "/parts/" not in rec.get("path", ""):
            continue
        begin = rec["ts"] - rec["ms"] / 1000.0
        if begin >= since and (first is None or begin < first):
            first = begin
    return first


def main() -> None:
    p = b.base_parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=b.parse_size, default=None, help="file size (default 1G; --quick 256M)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--cold", action="store_true", help="drop the page cache before every run (root)")
    args = p.parse_args()
    size = args.size or (256 * b.MIB if args.quick else 1 << 30)
    runs = args.runs or (2 if args.quick else 5)
    cold = b.ColdCache(args.cold)
    before = cold.before

    with b.Workdir(args, "upload") as tmp:
        src = tmp / "random.mkv"
        b.progress(f"writing a {size / b.MIB:.0f} MiB random-payload video")
        b.random_video(src, size)
        size = src.stat().st_size
        expected = b.sha256_of(src)
        log = tmp / "requests.jsonl"
        with b.BenchServer(tmp / "server", request_log=log) as srv:
            homes = iter(range(1 << 30))
            sdk_env = dict(srv.cli_env(tmp / "home-sdk"), BENCH_URL=srv.url, BENCH_KEY=srv.key)
            dest = srv.data_dir / "proxy-copy.bin"
            first_parts: list[float] = []
            server_cpu: dict[str, list[float]] = {"cli": [], "sdk": []}  # the shared bottleneck

            def drop(upload_id: str) -> None:  # free the server's copy (outside the timing)
                srv.api("DELETE", f"/v1/uploads/{upload_id}")

            def cli() -> b.Run:
                env = srv.cli_env(tmp / f"home-{next(homes)}")
                before()
                c0 = srv.cpu_seconds()
                r = b.timed(
                    [b.sophon(), "upload", "--new", "--no-progress", "-c", str(args.concurrency), str(src)],
                    env=env,
                ).check("sophon upload")
                server_cpu["cli"].append(srv.cpu_seconds() - c0)
                first = first_part_start(log, r.t0)
                if first is not None:
                    first_parts.append(first - r.t0)
                drop(r.stdout.split()[0])
                return r

            def sdk() -> b.Run:
                before()
                c0 = srv.cpu_seconds()
                r = b.timed([sys.executable, "-c", SDK_UPLOAD, str(src)], env=sdk_env).check(
                    "sdk upload_file"
                )
                server_cpu["sdk"].append(srv.cpu_seconds() - c0)
                drop(r.stdout.split()[0])
                return r

            def proxy() -> b.Run:
                before()
                r = b.timed([sys.executable, "-c", PROXY, str(src), str(dest)]).check("cp + sha256")
                if r.stdout.strip() != expected:
                    raise SystemExit("error: proxy hash mismatch")
                dest.unlink()
                return r

            def start() -> b.Run:
                env = srv.cli_env(tmp / f"home-{next(homes)}")
                before()
                return b.timed([b.sophon(), "--version"], env=env).check("sophon --version")

            sides = [("cli", cli), ("sdk", sdk), ("proxy", proxy), ("start", start)]
            results = b.alternate(sides, runs)

    med = {k: b.median(r.wall for r in v) for k, v in results.items()}
    rss = {k: max(r.rss_mib for r in v) for k, v in results.items()}
    cpu = {k: b.median(r.user + r.sys for r in v) for k, v in results.items()}
    rchar = {k: b.median(r.rchar for r in v if r.rchar is not None) for k, v in results.items()}
    read_over_size = (
        round((rchar["cli"] - rchar["start"]) / size, 4) if rchar["cli"] == rchar["cli"] else None
    )
    first_part = round(b.median(first_parts) - med["start"], 3) if first_parts else None
    t = b.Table(
        f"upload of {size / b.MIB:.0f} MiB, {runs} alternating runs per side (medians)"
        + (", page cache dropped before every run" if cold.permitted else ""),
        ["side", "wall s", "MiB/s", "cpu s", "peak RSS MiB", "read MiB", "runs (wall s)"],
    )
    labels = {
        "cli": "(a) sophon upload",
        "sdk": f"(b) sophon-sdk upload_file(concurrency={args.concurrency})",
        "proxy": "(c) cp + sha256 (limit proxy)",
        "start": "(d) sophon --version (baseline)",
    }
    for k in ("cli", "sdk", "proxy", "start"):
        t.add(
            labels[k],
            med[k],
            size / b.MIB / med[k] if k != "start" else float("nan"),
            cpu[k],
            rss[k],
            rchar[k] / b.MIB,
            " ".join(f"{r.wall:.2f}" for r in results[k]),
        )
    figures = {
        "benchmark": "upload",
        "size_bytes": size,
        "runs": runs,
        "cold": bool(cold.permitted),
        "cold_asked": cold.asked,
        "cli_s": round(med["cli"], 3),
        "sdk_s": round(med["sdk"], 3),
        "proxy_s": round(med["proxy"], 3),
        "start_s": round(med["start"], 3),
        "cli_over_proxy": b.ratio(med["cli"], med["proxy"]),
        "cli_over_sdk": b.ratio(med["cli"], med["sdk"]),
        "cli_peak_rss_mib": round(rss["cli"], 1),
        "read_over_size": read_over_size,
        "first_part_s": first_part,
        "cli_cpu_s": round(cpu["cli"], 3),
        "sdk_cpu_s": round(cpu["sdk"], 3),
        "sdk_peak_rss_mib": round(rss["sdk"], 1),
        "cli_server_cpu_s": round(b.median(server_cpu["cli"]), 3),
        "sdk_server_cpu_s": round(b.median(server_cpu["sdk"]), 3),
    }
    notes = [
        b.goal_line("cli_over_proxy", figures["cli_over_proxy"], 1.3),
        b.goal_line("cli_over_sdk", figures["cli_over_sdk"], 1.0),
        b.goal_line("cli_peak_rss_mib", figures["cli_peak_rss_mib"], 96, unit=" MiB"),
    ]
    if read_over_size is not None:
        notes.append(b.goal_line("read_over_size", read_over_size, 1.02))
    else:
        notes.append("read_over_size: /proc/<pid>/io not readable here")
    if first_part is not None:
        notes.append(b.goal_line("first_part_s", first_part, 0.15, unit=" s"))
    else:
        notes.append("first_part_s: no part request found in the server's request log")
    notes.append(
        f"server CPU per upload (median): {figures['cli_server_cpu_s']:.2f} s with the CLI, "
        f"{figures['sdk_server_cpu_s']:.2f} s with the SDK; client and server share "
        f"{os.cpu_count()} cores"
    )
    if args.cold and not cold.permitted:
        notes.append("--cold: dropping the page cache was not permitted; every run was warm")
    b.finish(figures, [t], notes)


if __name__ == "__main__":
    main()
