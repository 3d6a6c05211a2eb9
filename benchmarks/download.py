"""Download of a large job output: `sophon download` vs curl + sha256 and cp + sha256; RSS at two sizes.

    python benchmarks/download.py [--size 1G] [--small 16M] [--cold] [--quick] [--runs N]

Benchmark-only setup (the server has no supported way to make a huge output without encoding a
huge video): a tiny clip is encoded twice by a `sophon server` child process; then each finished
job's output is swapped for a random file of the wanted size written into the server's
``outputs/`` directory, and the job row's ``output_path`` and ``output.bytes``/``output.sha256``
are patched in the server's SQLite store (``sophon.db``). The server reads the row on every
request, so `sophon download` then fetches and verifies the big file through the real routes
(GET /v1/jobs/{id}, GET /v1/jobs/{id}/output -> 302 -> GET /v1/downloads/{token}).

Alternating runs of
  (a) cli:          `sophon download JOB -o FILE --force` of the large output (receives into a
                    .part file, verifies size and sha256, renames),
  (b) curl+sha256:  `curl -sS -o FILE URL` of the signed URL the server redirects to (fetched
                    outside the timing), then a hashlib sha256 of FILE, in one child process: the
                    peer (an HTTP client plus the verification the CLI does),
  (c) cp:           `cp` of the same file from the server's outputs/ into the same target directory,
  (d) cp+sha256:    cp plus a hashlib sha256 of it (the limit proxy: a verifying local copy),
  (e) cli small:    `sophon download` of the small output, to show the RSS does not grow with size.
"server cpu s" is the CPU the `sophon server` process used during each side's runs (from
/proc/<pid>/stat): on a 2-core machine the server's sending shares the cores with the client.
--cold drops the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) before every run, where
permitted (root on Linux).

Last line: {"download_over_curl", "download_over_cp_sha256", "cli_peak_rss_mib", ...}.
Goals: download_over_curl <= 1.0, download_over_cp_sha256 <= 1.5, cli_peak_rss_mib <= 64 (flat).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b  # noqa: E402

PROXY = b.hash_after('["cp", sys.argv[1], sys.argv[2]]')

CURL = b.hash_after('["curl", "-sS", "-o", sys.argv[2], sys.argv[1]]')


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def big_output(srv: b.BenchServer, upload_id: str, size: int) -> tuple[str, Path]:
    """A completed job whose output is now a random ``size``-byte file (see the module doc)."""
    job = srv.wait_job(srv.create_job(upload_id, "sophon-espresso")["id"])
    if job["status"] != "completed" or job.get("final_artifact") != "encoded":
        raise SystemExit(f"error: fixture job ended {job['status']} / {job.get('final_artifact')}")
    path = srv.data_dir / "outputs" / f"{job['id']}.bench.mp4"
    b.random_file(path, size)
    digest = b.sha256_of(path)
    db = srv.db()
    row = db.execute("SELECT output FROM jobs WHERE id=?", (job["id"],)).fetchone()
    output = json.loads(row["output"])
    output.update(bytes=size, sha256=digest)
    db.execute(
        "UPDATE jobs SET output=?, output_path=? WHERE id=?", (json.dumps(output), str(path), job["id"])
    )
    db.close()
    check = srv.ok("GET", f"/v1/jobs/{job['id']}")
    assert check["output"]["bytes"] == size and check["output"]["sha256"] == digest
    return job["id"], path


def main() -> None:
    p = b.base_parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=b.parse_size, default=None, help="large output (default 1G; --quick 256M)")
    p.add_argument("--small", type=b.parse_size, default=16 * b.MIB, help="small output (default 16M)")
    p.add_argument("--cold", action="store_true", help="drop the page cache before every run (root)")
    args = p.parse_args()
    size = args.size or (256 * b.MIB if args.quick else 1 << 30)
    runs = args.runs or (2 if args.quick else 5)
    if shutil.which("curl") is None:
        raise SystemExit(
            "error: curl is not installed (it is the peer); install it, e.g. apt-get install curl"
        )
    cold = b.ColdCache(args.cold)
    before = cold.before

    with b.Workdir(args, "download") as tmp:
        clip = b.make_clip(tmp / "clip.mp4")
        with b.BenchServer(tmp / "server") as srv:
            upload_id = srv.upload(clip)
            b.progress(f"preparing a {size / b.MIB:.0f} MiB and a {args.small / b.MIB:.0f} MiB output")
            big_id, big_path = big_output(srv, upload_id, size)
            big_sha256 = b.sha256_of(big_path)
            small_id, _ = big_output(srv, upload_id, args.small)
            env = srv.cli_env(tmp / "home")
            target = tmp / "target"
            target.mkdir()

            def cli(job_id: str):
                def run() -> b.Run:
                    dst = target / "out.mp4"
                    before()
                    r = b.timed(
                        [b.sophon(), "download", job_id, "-o", str(dst), "--force", "--no-progress"], env=env
                    )
                    r.check("sophon download")
                    dst.unlink()
                    return r

                return run

            def cp() -> b.Run:
                dst = target / "cp.mp4"
                before()
                r = b.timed(["cp", str(big_path), str(dst)]).check("cp")
                dst.unlink()
                return r

            def proxy() -> b.Run:
                dst = target / "proxy.mp4"
                before()
                r = b.timed([sys.executable, "-c", PROXY, str(big_path), str(dst)]).check("cp + sha256")
                dst.unlink()
                return r

            def curl() -> b.Run:
                dst = target / "curl.mp4"
                url = srv.output_url(big_id)  # a fresh signed URL, outside the timing
                before()
                r = b.timed([sys.executable, "-c", CURL, url, str(dst)]).check("curl + sha256")
                if r.stdout.strip() != big_sha256:
                    raise SystemExit("error: curl + sha256: the downloaded file's sha256 differs")
                dst.unlink()
                return r

            server_cpu: dict[str, list[float]] = {}

            def with_server_cpu(name: str, fn):
                """The side, plus the CPU the server process spent meanwhile (its half of the work)."""

                def run() -> b.Run:
                    assert srv.proc is not None
                    before_cpu = process_cpu(srv.proc.pid)
                    r = fn()
                    server_cpu.setdefault(name, []).append(process_cpu(srv.proc.pid) - before_cpu)
                    return r

                return name, run

            sides = [
                with_server_cpu("cli", cli(big_id)),
                with_server_cpu("curl", curl),
                with_server_cpu("cp", cp),
                with_server_cpu("proxy", proxy),
                with_server_cpu("cli_small", cli(small_id)),
            ]
            results = b.alternate(sides, runs)

    med = {k: b.median(r.wall for r in v) for k, v in results.items()}
    rss = {k: max(r.rss_mib for r in v) for k, v in results.items()}
    cpu = {k: b.median(r.user + r.sys for r in v) for k, v in results.items()}
    t = b.Table(
        f"download, {runs} alternating runs per side (medians)"
        + (", page cache dropped before every run" if cold.permitted else ""),
        ["side", "size MiB", "wall s", "MiB/s", "cpu s", "server cpu s", "peak RSS MiB"],
    )
    rows = [
        ("cli", "(a) sophon download", size),
        ("curl", "(b) curl + sha256 (peer)", size),
        ("cp", "(c) cp", size),
        ("proxy", "(d) cp + sha256 (limit proxy)", size),
        ("cli_small", "(e) sophon download (small)", args.small),
    ]
    for k, label, n in rows:
        t.add(label, n / b.MIB, med[k], n / b.MIB / med[k], cpu[k], b.median(server_cpu[k]), rss[k])
    figures = {
        "benchmark": "download",
        "size_bytes": size,
        "small_bytes": args.small,
        "runs": runs,
        "cold": bool(cold.permitted),
        "cold_asked": cold.asked,
        "cli_s": round(med["cli"], 3),
        "curl_sha256_s": round(med["curl"], 3),
        "cp_s": round(med["cp"], 3),
        "cp_sha256_s": round(med["proxy"], 3),
        "download_over_curl": b.ratio(med["cli"], med["curl"]),
        "download_over_cp_sha256": b.ratio(med["cli"], med["proxy"]),
        "download_over_cp": b.ratio(med["cli"], med["cp"]),
        "cli_cpu_s": round(cpu["cli"], 3),
        "curl_sha256_cpu_s": round(cpu["curl"], 3),
        "server_cpu_s_for_cli": round(b.median(server_cpu["cli"]), 3),
        "server_cpu_s_for_curl": round(b.median(server_cpu["curl"]), 3),
        "cli_peak_rss_mib": round(rss["cli"], 1),
        "cli_small_peak_rss_mib": round(rss["cli_small"], 1),
        "rss_growth_mib": round(rss["cli"] - rss["cli_small"], 1),
    }
    notes = [
        b.goal_line("download_over_curl", figures["download_over_curl"], 1.0),
        b.goal_line("download_over_cp_sha256", figures["download_over_cp_sha256"], 1.5),
        f"download_over_cp = {figures['download_over_cp']:.3f} (no goal: cp copies inside the kernel)",
        b.goal_line("cli_peak_rss_mib", figures["cli_peak_rss_mib"], 64, unit=" MiB"),
        f"rss growth from {args.small / b.MIB:.0f} MiB to {size / b.MIB:.0f} MiB: {figures['rss_growth_mib']:+.1f} MiB (goal: flat)",
    ]
    if args.cold and not cold.permitted:
        notes.append("--cold: dropping the page cache was not permitted; every run was warm")
    b.finish(figures, [t], notes)


if __name__ == "__main__":
    main()
