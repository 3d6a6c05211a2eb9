"""Upload throughput: `sophon upload` vs the official SDK vs the limit proxy (cp + sha256).

    python benchmarks/upload.py [--size 1G] [--quick] [--runs N]

Against one `sophon server` on loopback, alternating runs of
  (a) cli:   `sophon upload --new FILE` (hashes the file, uploads 4 parts in parallel, checks the
             server's sha256 and size against its own),
  (b) sdk:   the official sophon-sdk `upload_file(concurrency=4)` (no local hash, no verification),
  (c) proxy: `cp FILE <server data dir>` then a hashlib sha256 of the file, in one child process.
Each side is a separate process: wall time and whole-process peak RSS come from wait4().

The file is random bytes in a real container (rawvideo frames in Matroska): the server probes
what it receives at complete, so a bare random file would be rejected; the bytes are just as
incompressible. Everything is written under a temporary directory that is removed at the end.

Last line: {"cli_over_proxy", "cli_over_sdk", "cli_peak_rss_mib", ...}.
Goals: cli_over_proxy <= 1.3, cli_over_sdk <= 1.0.
"""

from __future__ import annotations

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

PROXY = r"""
import hashlib, subprocess, sys
subprocess.run(["cp", sys.argv[1], sys.argv[2]], check=True)
h = hashlib.sha256()
with open(sys.argv[1], "rb") as fh:
    while True:
        block = fh.read(1 << 20)
        if not block:
            break
        h.update(block)
print(h.hexdigest())
"""


def main() -> None:
    p = b.base_parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=b.parse_size, default=None, help="file size (default 1G; --quick 256M)")
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args()
    size = args.size or (256 * b.MIB if args.quick else 1 << 30)
    runs = args.runs or (2 if args.quick else 5)

    with b.Workdir(args, "upload") as tmp:
        src = tmp / "random.mkv"
        b.progress(f"writing a {size / b.MIB:.0f} MiB random-payload video")
        b.random_video(src, size)
        size = src.stat().st_size
        expected = b.sha256_of(src)
        with b.BenchServer(tmp / "server") as srv:
            home = tmp / "home"
            env = srv.cli_env(home)
            sdk_env = dict(env, BENCH_URL=srv.url, BENCH_KEY=srv.key)
            dest = srv.data_dir / "proxy-copy.bin"

            def drop(upload_id: str) -> None:  # free the server's copy (outside the timing)
                srv.api("DELETE", f"/v1/uploads/{upload_id}")

            def cli() -> b.Run:
                r = b.timed(
                    [b.sophon(), "upload", "--new", "--no-progress", "-c", str(args.concurrency), str(src)],
                    env=env,
                ).check("sophon upload")
                drop(r.stdout.split()[0])
                return r

            def sdk() -> b.Run:
                r = b.timed([sys.executable, "-c", SDK_UPLOAD, str(src)], env=sdk_env).check(
                    "sdk upload_file"
                )
                drop(r.stdout.split()[0])
                return r

            def proxy() -> b.Run:
                r = b.timed([sys.executable, "-c", PROXY, str(src), str(dest)]).check("cp + sha256")
                if r.stdout.strip() != expected:
                    raise SystemExit("error: proxy hash mismatch")
                dest.unlink()
                return r

            results = b.alternate([("cli", cli), ("sdk", sdk), ("proxy", proxy)], runs)

    med = {k: b.median(r.wall for r in v) for k, v in results.items()}
    rss = {k: max(r.rss_mib for r in v) for k, v in results.items()}
    cpu = {k: b.median(r.user + r.sys for r in v) for k, v in results.items()}
    t = b.Table(
        f"upload of {size / b.MIB:.0f} MiB, {runs} alternating runs per side (medians)",
        ["side", "wall s", "MiB/s", "cpu s", "peak RSS MiB", "runs (wall s)"],
    )
    labels = {
        "cli": "(a) sophon upload",
        "sdk": f"(b) sophon-sdk upload_file(concurrency={args.concurrency})",
        "proxy": "(c) cp + sha256 (limit proxy)",
    }
    for k in ("cli", "sdk", "proxy"):
        t.add(
            labels[k],
            med[k],
            size / b.MIB / med[k],
            cpu[k],
            rss[k],
            " ".join(f"{r.wall:.2f}" for r in results[k]),
        )
    figures = {
        "benchmark": "upload",
        "size_bytes": size,
        "runs": runs,
        "cli_s": round(med["cli"], 3),
        "sdk_s": round(med["sdk"], 3),
        "proxy_s": round(med["proxy"], 3),
        "cli_over_proxy": b.ratio(med["cli"], med["proxy"]),
        "cli_over_sdk": b.ratio(med["cli"], med["sdk"]),
        "cli_peak_rss_mib": round(rss["cli"], 1),
        "sdk_peak_rss_mib": round(rss["sdk"], 1),
    }
    notes = [
        b.goal_line("cli_over_proxy", figures["cli_over_proxy"], 1.3),
        b.goal_line("cli_over_sdk", figures["cli_over_sdk"], 1.0),
        f"cli_peak_rss_mib = {figures['cli_peak_rss_mib']:.1f}",
    ]
    b.finish(figures, [t], notes)


if __name__ == "__main__":
    main()
