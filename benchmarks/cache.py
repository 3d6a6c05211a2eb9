"""Cost of one state-cache update at 10, 1,000 and 10,000 entries (sophon_cli.state.StateStore).

    python benchmarks/cache.py [--quick] [--runs N] [--updates N]

For each size a cache is prepared with that many realistic `sophon encode` entries (a snapshot in
the documented format {"version": 1, "entries": {...}}), opened and read once the way the encode pipeline
does (``store.entries()``), then timed doing ``store.update(key, fields)`` -- one state change of
one file, exactly what ``encode.steps.Context.save`` does. Rounds alternate 10, 1k, 10k, 10, 1k, 10k, ...
so background load hits all sizes alike; the per-update median decides the ratio.

The store folds its journal into a new snapshot once the journal outgrows the snapshot, so a
compaction is also timed per size and its cost spread over the updates between two compactions
(the amortised cost, reported beside the median). Also shown: the one-off read of the cache when
a process starts (``load_ms``).

Last line: {"update_10k_over_10", ...}. Goal: update_10k_over_10 <= 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b  # noqa: E402

SIZES = (10, 1_000, 10_000)


def entry(i: int) -> dict:
    t = 1_790_000_000.0 + i
    return {
        "created_at": t,
        "updated_at": t + 30,
        "path": f"/home/user/videos/batch/clip{i:05d}.mp4",
        "fingerprint": "f" * 16,
        "size": 10_000_000 + i,
        "state": "done",
        "sha256": f"{i:064x}",
        "upload_id": f"upl_{i:016x}",
        "job_id": f"job_{i:016x}",
        "job_status": "completed",
        "final_artifact": "encoded",
        "output": f"/home/user/videos/batch/clip{i:05d}.sophon.mp4",
        "output_sha256": f"{i + 1:064x}",
        "server_output_bytes": 4_000_000 + i,
        "result": "encoded",
    }


def prepare(directory: Path, n: int):
    from sophon_cli.state import STATE_VERSION, StateStore

    directory.mkdir(parents=True)
    path = directory / "state.json"
    doc = {"version": STATE_VERSION, "entries": {f"k{i:06d}": entry(i) for i in range(n)}}
    path.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True))
    t0 = time.perf_counter()
    store = StateStore(path)
    loaded = len(store.entries())  # what Pipeline.prepare does first
    load = time.perf_counter() - t0
    assert loaded == n, (loaded, n)
    return store, load, path.stat().st_size


def main() -> None:
    p = b.base_parser(__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=None, help="updates per size per round")
    args = p.parse_args()
    runs = args.runs or (4 if args.quick else 10)
    per_round = args.updates or (20 if args.quick else 50)

    with b.Workdir(args, "cache") as tmp:
        stores, loads, snap_bytes = {}, {}, {}
        for n in SIZES:
            stores[n], loads[n], snap_bytes[n] = prepare(tmp / f"n{n}", n)
        counter = [0]
        record_bytes: list[int] = []

        def updates(n: int):
            def run() -> list[float]:
                store = stores[n]
                times = []
                for _ in range(per_round):
                    counter[0] += 1
                    i = counter[0] % n  # an existing file moves on to its next state
                    fields = {
                        "state": "polling",
                        "job_id": f"job_{counter[0]:016x}",
                        "job_status": "encoding",
                    }
                    t0 = time.perf_counter()
                    store.update(f"k{i:06d}", fields)
                    times.append(time.perf_counter() - t0)
                record_bytes.append(store.journal_path.stat().st_size)
                return times

            return run

        results = b.alternate([(str(n), updates(n)) for n in SIZES], runs, warmup=1)

        compaction = {}
        for n in SIZES:  # one timed fold of the journal into a fresh snapshot per size
            t0 = time.perf_counter()
            stores[n].compact()
            compaction[n] = time.perf_counter() - t0
            snap_bytes[n] = stores[n].path.stat().st_size
            assert len(stores[n].load()) == n

    rec = 90.0  # bytes of one journal record, measured below when possible
    total_updates = (runs + 1) * per_round
    if record_bytes:
        rec = max(record_bytes) / max(1, total_updates)
    table = b.Table(
        f"state update cost, {runs} alternating rounds x {per_round} updates per size",
        [
            "entries",
            "median us",
            "p90 us",
            "max us",
            "compaction ms",
            "amortised us",
            "load ms",
            "snapshot KiB",
        ],
    )
    med, amort = {}, {}
    for n in SIZES:
        times = sorted(t for r in results[str(n)] for t in r)
        med[n] = b.median(times)
        p90 = times[int(len(times) * 0.9)]
        # StateStore compacts when the journal exceeds max(compact_bytes=1 MiB, snapshot size)
        between = max(1 << 20, snap_bytes[n]) / rec
        amort[n] = b.median(times) + compaction[n] / between
        table.add(
            f"{n:,}",
            med[n] * 1e6,
            p90 * 1e6,
            times[-1] * 1e6,
            compaction[n] * 1e3,
            amort[n] * 1e6,
            loads[n] * 1e3,
            snap_bytes[n] / 1024,
        )
    figures = {
        "benchmark": "cache",
        "runs": runs,
        "updates_per_round": per_round,
        "update_10_us": round(med[10] * 1e6, 1),
        "update_1k_us": round(med[1_000] * 1e6, 1),
        "update_10k_us": round(med[10_000] * 1e6, 1),
        "update_10k_over_10": b.ratio(med[10_000], med[10]),
        "amortised_10k_over_10": b.ratio(amort[10_000], amort[10]),
        "load_10k_ms": round(loads[10_000] * 1e3, 1),
    }
    notes = [
        b.goal_line("update_10k_over_10", figures["update_10k_over_10"], 2.0),
        f"amortised (compaction spread over the updates between two) 10k/10 = {figures['amortised_10k_over_10']:.3f}",
    ]
    b.finish(figures, [table], notes)


if __name__ == "__main__":
    main()
