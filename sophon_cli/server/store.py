"""SQLite state of the local server (stdlib ``sqlite3`` in WAL mode).

One connection per thread; every multi-statement change runs in ``BEGIN IMMEDIATE`` so several
server processes may share one data dir: a job is claimed with a conditional UPDATE
(``WHERE status='queued'``) and owned through a lease (``lease_owner``/``lease_until``) that the
worker renews while it runs. Jobs whose lease lapsed, or whose owner process is gone, are
re-queued by :meth:`Store.requeue_stale`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .util import ACTIVE, TERMINAL, now

# Every SQL statement of the server lives in this module; the handlers, workers and the delivery
# thread call the typed methods below.

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    file_name TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    mime_type TEXT NOT NULL,
    chunk_size INTEGER NOT NULL,
    total_chunks INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    sha256 TEXT,
    probe TEXT,
    path TEXT
);
CREATE TABLE IF NOT EXISTS upload_parts (
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    upload_id TEXT NOT NULL,
    status TEXT NOT NULL,
    profile TEXT NOT NULL,
    effective_profile_id TEXT,
    options TEXT NOT NULL,
    webhook_ids TEXT NOT NULL,
    metadata TEXT NOT NULL,
    source TEXT NOT NULL,
    progress TEXT NOT NULL,
    output TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    error TEXT,
    status_reason TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    final_artifact TEXT,
    saved_percent REAL,
    output_path TEXT,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    status INTEGER,
    body BLOB,
    content_type TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    name TEXT,
    secret TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL,
    lease_until REAL,
    last_error TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
"""

JOB_INSERT_COLUMNS = (
    "id",
    "upload_id",
    "status",
    "profile",
    "options",
    "webhook_ids",
    "metadata",
    "source",
    "progress",
    "output",
    "created_at",
)
WEBHOOK_DELETED = "the webhook was deleted"
PENDING_TTL = 300.0  # seconds a first request may hold its Idempotency-Key before it counts as dead
JSON_COLUMNS = ("options", "webhook_ids", "metadata", "source", "progress", "output", "probe")


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for col in JSON_COLUMNS:
        if col in out and isinstance(out[col], str):
            out[col] = json.loads(out[col])
    return out


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self.conn()
        conn.executescript(SCHEMA)
        columns = {r["name"] for r in conn.execute("PRAGMA table_info(uploads)")}
        if "assembling_owner" not in columns:  # added after the first release of the schema
            conn.execute("ALTER TABLE uploads ADD COLUMN assembling_owner TEXT")
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    # -- connections -------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn = c
            with self._lock:
                self._all.append(c)
        return c

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        c = self.conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except Exception:
                pass
        self._local = threading.local()

    def ping(self) -> bool:
        try:
            self.conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def one(self, sql: str, args: tuple = ()) -> dict[str, Any] | None:
        return _row(self.conn().execute(sql, args).fetchone())

    def all(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        return [_row(r) for r in self.conn().execute(sql, args).fetchall()]  # type: ignore[misc]

    # -- idempotency ---------------------------------------------------------------------------
    def idem_begin(self, key: str, route: str, body_hash: str, ttl: float = 86400.0):
        """Reserve ``key`` for (route, body). Returns ("new", None), ("replay", row),
        ("route", row) for a key seen on another route, ("body", row) for another body, or
        ("pending", row) while the first request is still being processed."""
        t = now()
        with self.tx() as db:
            db.execute("DELETE FROM idempotency WHERE created_at < ?", (t - ttl,))
            # a reservation whose request never finished (its server died) is abandoned
            db.execute("DELETE FROM idempotency WHERE status IS NULL AND created_at < ?", (t - PENDING_TTL,))
            row = _row(db.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone())
            if row is None:
                db.execute(
                    "INSERT INTO idempotency (key, route, body_hash, created_at) VALUES (?,?,?,?)",
                    (key, route, body_hash, t),
                )
                return "new", None
        if row["route"] != route:
            return "route", row
        if row["body_hash"] != body_hash:
            return "body", row
        if row["status"] is None:
            return "pending", row
        return "replay", row

    def idem_finish(self, key: str, status: int, body: bytes, content_type: str) -> None:
        self.conn().execute(
            "UPDATE idempotency SET status=?, body=?, content_type=? WHERE key=?",
            (status, body, content_type, key),
        )

    def idem_abort(self, key: str) -> None:
        self.conn().execute("DELETE FROM idempotency WHERE key=? AND status IS NULL", (key,))

    # -- jobs ------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def claim_job(self, owner: str, lease: float) -> dict[str, Any] | None:
        t = now()
        with self.tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            cur = db.execute(
                "UPDATE jobs SET status='probing', lease_owner=?, lease_until=?, attempt=attempt+1,"
                " started_at=COALESCE(started_at, ?) WHERE id=? AND status='queued'",
                (owner, t + lease, t, row["id"]),
            )
            if cur.rowcount != 1:
                return None
            return _row(db.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone())

    def update_owned_job(self, job_id: str, owner: str, lease: float, **fields: Any) -> bool:
        """Update a job this worker owns; False if it was canceled or taken away meanwhile."""
        sets = ["lease_until=?"]
        args: list[Any] = [now() + lease]
        for k, v in fields.items():
            sets.append(f"{k}=?")
            args.append(json.dumps(v) if k in JSON_COLUMNS else v)
        placeholders = ",".join("?" * len(TERMINAL))
        args += [job_id, owner, *TERMINAL]
        cur = self.conn().execute(
            f"UPDATE jobs SET {', '.join(sets)} WHERE id=? AND lease_owner=?"
            f" AND status NOT IN ({placeholders})",
            tuple(args),
        )
        return cur.rowcount == 1

    def release_job(self, job_id: str, owner: str) -> None:
        """Give an owned, still active job back to the queue (clean shutdown)."""
        placeholders = ",".join("?" * len(ACTIVE))
        self.conn().execute(
            "UPDATE jobs SET status='queued', lease_owner=NULL, lease_until=NULL,"
            " progress=json_set(progress, '$.phase', 'queued', '$.stage', 'queued')"
            f" WHERE id=? AND lease_owner=? AND status IN ({placeholders})",
            (job_id, owner, *ACTIVE),
        )

    def release_stale_assembling(self, is_dead) -> int:
        """Uploads left ``assembling`` by a server that died mid-complete go back to ``uploading``
        (their parts are all there), so the client's retry of complete can finish them."""
        n = 0
        with self.tx() as db:
            rows = db.execute("SELECT id, assembling_owner FROM uploads WHERE status='assembling'").fetchall()
            for r in rows:
                if is_dead(r["assembling_owner"] or ""):
                    db.execute(
                        "UPDATE uploads SET status='uploading', assembling_owner=NULL"
                        " WHERE id=? AND status='assembling'",
                        (r["id"],),
                    )
                    n += 1
        return n

    def requeue_stale(self, is_dead) -> int:
        """Re-queue active jobs whose lease lapsed or whose owner ``is_dead(owner)``."""
        placeholders = ",".join("?" * len(ACTIVE))
        t = now()
        n = 0
        with self.tx() as db:
            rows = db.execute(
                f"SELECT id, lease_owner, lease_until FROM jobs WHERE status IN ({placeholders})",
                ACTIVE,
            ).fetchall()
            for r in rows:
                if (r["lease_until"] or 0) < t or is_dead(r["lease_owner"] or ""):
                    db.execute(
                        "UPDATE jobs SET status='queued', lease_owner=NULL, lease_until=NULL,"
                        " progress=json_set(progress, '$.phase', 'queued', '$.stage', 'queued')"
                        " WHERE id=?",
                        (r["id"],),
                    )
                    n += 1
        return n

    def count_active_jobs(self) -> int:
        placeholders = ",".join("?" * (len(ACTIVE) + 1))
        row = (
            self.conn()
            .execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({placeholders})", ("queued", *ACTIVE))
            .fetchone()
        )
        return int(row[0])

    def job_counts(self) -> list[tuple[str, int]]:
        return [
            (r[0], int(r[1]))
            for r in self.conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        ]

    def insert_job(self, **values: Any) -> None:
        args = tuple(json.dumps(values[c]) if c in JSON_COLUMNS else values[c] for c in JOB_INSERT_COLUMNS)
        self.conn().execute(
            f"INSERT INTO jobs ({', '.join(JOB_INSERT_COLUMNS)}) VALUES ({','.join('?' * len(args))})", args
        )

    def list_jobs(self, *, before_seq: int | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Jobs newest first (by ``seq``), below ``before_seq``, at most ``limit``."""
        where, args = [], []
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        if status:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        return self.all(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))

    def outputs_past_retention(self, t: float) -> list[str]:
        """Output files of completed jobs whose retention ended before ``t``."""
        rows = self.conn().execute(
            "SELECT output_path FROM jobs WHERE status='completed' AND output_path IS NOT NULL"
            " AND json_extract(output, '$.retention_expires_at') < ?",
            (t,),
        )
        return [r[0] for r in rows]

    def upload_has_jobs(self, upload_id: str) -> bool:
        row = self.conn().execute("SELECT 1 FROM jobs WHERE upload_id=? LIMIT 1", (upload_id,)).fetchone()
        return row is not None

    def finish_job(
        self, job_id: str, status: str, *, owner: str | None, fields: dict[str, Any], events
    ) -> dict[str, Any] | None:
        """Move a non-terminal job to terminal ``status`` and queue its webhook events in one
        transaction. ``events(job, webhook_id, t)`` returns ``(event_id, body)`` for each active
        webhook the job listed. Returns the updated row, or None if the job was already terminal
        (or not ``owner``'s).

        The progress's ``phase`` and ``stage`` become ``status``: in ``fields["progress"]`` when
        given, else in the stored progress by the same UPDATE (``json_set``), so the rest of it is
        the last progress written, never a copy read before a worker's later write."""
        t = now()
        sets = ["status=?", "completed_at=?", "lease_owner=NULL", "lease_until=NULL"]
        args: list[Any] = [status, t]
        if "progress" in fields:
            fields = dict(fields, progress=dict(fields["progress"], phase=status, stage=status))
        else:
            sets.append("progress=json_set(progress, '$.phase', ?, '$.stage', ?)")
            args += [status, status]
        for k, v in fields.items():
            sets.append(f"{k}=?")
            args.append(json.dumps(v) if k in JSON_COLUMNS else v)
        where = f"id=? AND status NOT IN ({','.join('?' * len(TERMINAL))})"
        args += [job_id, *TERMINAL]
        if owner is not None:
            where += " AND lease_owner=?"
            args.append(owner)
        with self.tx() as db:
            cur = db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", tuple(args))
            if cur.rowcount != 1:
                return None
            row = _row(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
            assert row is not None
            for wid in row.get("webhook_ids") or []:
                hook = db.execute("SELECT active FROM webhooks WHERE id=?", (wid,)).fetchone()
                if hook is None or not hook["active"]:
                    continue
                made = events(row, wid, t)
                if made is None:
                    continue
                event_id, body = made
                db.execute(
                    "INSERT INTO deliveries (event_id, webhook_id, job_id, body, next_attempt_at, state,"
                    " created_at) VALUES (?,?,?,?,?,'pending',?)",
                    (event_id, wid, job_id, body, t, t),
                )
        return row

    # -- uploads ---------------------------------------------------------------------------------
    def insert_upload(
        self,
        *,
        id: str,
        file_name: str,
        file_size: int,
        mime_type: str,
        chunk_size: int,
        total_chunks: int,
        created_at: float,
        expires_at: float,
        path: str,
    ) -> None:
        self.conn().execute(
            "INSERT INTO uploads (id, file_name, file_size, mime_type, chunk_size, total_chunks, status,"
            " created_at, expires_at, path) VALUES (?,?,?,?,?,?,'uploading',?,?,?)",
            (id, file_name, file_size, mime_type, chunk_size, total_chunks, created_at, expires_at, path),
        )

    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM uploads WHERE id=?", (upload_id,))

    def part_numbers(self, upload_id: str) -> list[int]:
        rows = self.conn().execute(
            "SELECT part_number FROM upload_parts WHERE upload_id=? ORDER BY part_number", (upload_id,)
        )
        return [r[0] for r in rows]

    def part_sizes(self, upload_id: str) -> dict[int, int]:
        rows = self.conn().execute(
            "SELECT part_number, size FROM upload_parts WHERE upload_id=?", (upload_id,)
        )
        return {r[0]: r[1] for r in rows}

    def has_part(self, upload_id: str, part_number: int) -> bool:
        row = (
            self.conn()
            .execute(
                "SELECT 1 FROM upload_parts WHERE upload_id=? AND part_number=?", (upload_id, part_number)
            )
            .fetchone()
        )
        return row is not None

    def add_part(self, upload_id: str, part_number: int, size: int) -> None:
        self.conn().execute(
            "INSERT OR IGNORE INTO upload_parts (upload_id, part_number, size) VALUES (?,?,?)",
            (upload_id, part_number, size),
        )

    def begin_assembling(self, upload_id: str, owner: str) -> bool:
        cur = self.conn().execute(
            "UPDATE uploads SET status='assembling', assembling_owner=? WHERE id=? AND status='uploading'",
            (owner, upload_id),
        )
        return cur.rowcount == 1

    def abort_assembling(self, upload_id: str) -> None:
        self.conn().execute(
            "UPDATE uploads SET status='uploading', assembling_owner=NULL WHERE id=?", (upload_id,)
        )

    def complete_upload(self, upload_id: str, *, sha256: str, probe: dict[str, Any], path: str) -> None:
        self.conn().execute(
            "UPDATE uploads SET status='completed', sha256=?, probe=?, path=? WHERE id=?",
            (sha256, json.dumps(probe), path, upload_id),
        )

    def cancel_upload(self, upload_id: str, *, only_if: str | None = None) -> bool:
        """Mark the upload canceled and forget its parts (only from status ``only_if`` when given)."""
        with self.tx() as db:
            if only_if is None:
                cur = db.execute("UPDATE uploads SET status='canceled' WHERE id=?", (upload_id,))
            else:
                cur = db.execute(
                    "UPDATE uploads SET status='canceled' WHERE id=? AND status=?", (upload_id, only_if)
                )
            if cur.rowcount:
                db.execute("DELETE FROM upload_parts WHERE upload_id=?", (upload_id,))
        return cur.rowcount == 1

    def uploads_past_expiry(self, t: float) -> list[dict[str, Any]]:
        return self.all("SELECT id, path FROM uploads WHERE status='uploading' AND expires_at < ?", (t,))

    # -- webhooks --------------------------------------------------------------------------------
    def insert_webhook(self, *, id: str, url: str, name: str | None, secret: str, created_at: float) -> None:
        self.conn().execute(
            "INSERT INTO webhooks (id, url, name, secret, active, created_at) VALUES (?,?,?,?,1,?)",
            (id, url, name, secret, created_at),
        )

    def active_webhooks(self) -> list[dict[str, Any]]:
        return self.all(
            "SELECT id, url, name, active, created_at FROM webhooks WHERE active=1 ORDER BY created_at"
        )

    def webhook_is_active(self, webhook_id: str) -> bool:
        row = self.conn().execute("SELECT active FROM webhooks WHERE id=?", (webhook_id,)).fetchone()
        return row is not None and bool(row["active"])

    def deactivate_webhook(self, webhook_id: str) -> bool:
        """Deactivate the webhook and drop its queued deliveries: no further attempt is made (one
        already being sent finishes, and is not retried)."""
        with self.tx() as db:
            cur = db.execute("UPDATE webhooks SET active=0 WHERE id=? AND active=1", (webhook_id,))
            if cur.rowcount == 1:
                db.execute(
                    "UPDATE deliveries SET state='dropped', last_error=? WHERE webhook_id=? AND state='pending'",
                    (WEBHOOK_DELETED, webhook_id),
                )
        return cur.rowcount == 1

    # -- deliveries ------------------------------------------------------------------------------
    def delivery_counts(self) -> list[tuple[str, int]]:
        rows = self.conn().execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
        return [(r[0], int(r[1])) for r in rows]

    def deliveries_of(self, webhook_id: str) -> list[dict[str, Any]]:
        """The deliveries queued for one webhook, oldest first (state, attempts, last_error, ...)."""
        return self.all(
            "SELECT id, event_id, job_id, state, attempts, last_error, next_attempt_at FROM deliveries"
            " WHERE webhook_id=? ORDER BY id",
            (webhook_id,),
        )

    def claim_deliveries(self, lease: float, limit: int = 16) -> list[dict[str, Any]]:
        """Due pending deliveries (with their webhook's url and secret), leased to the caller."""
        t = now()
        claimed = []
        with self.tx() as db:
            # leases that lapsed (a crashed sender) become pending again
            db.execute(
                "UPDATE deliveries SET state='pending' WHERE state='sending' AND lease_until < ?", (t,)
            )
            rows = db.execute(
                "SELECT d.*, w.url, w.secret FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.state='pending' AND w.active=1 AND d.next_attempt_at <= ?"
                " ORDER BY d.next_attempt_at LIMIT ?",
                (t, limit),
            ).fetchall()
            for r in rows:
                db.execute(
                    "UPDATE deliveries SET state='sending', lease_until=? WHERE id=?", (t + lease, r["id"])
                )
                claimed.append(dict(r))
        return claimed

    def next_delivery_due(self) -> float | None:
        row = (
            self.conn()
            .execute("SELECT MIN(next_attempt_at) FROM deliveries WHERE state='pending'")
            .fetchone()
        )
        return row[0] if row and row[0] is not None else None

    def delivery_delivered(self, delivery_id: int, attempts: int) -> None:
        self.conn().execute(
            "UPDATE deliveries SET state='delivered', attempts=?, last_error=NULL WHERE id=?",
            (attempts, delivery_id),
        )

    def delivery_dropped(self, delivery_id: int, attempts: int, error: str) -> None:
        self.conn().execute(
            "UPDATE deliveries SET state='dropped', attempts=?, last_error=? WHERE id=?",
            (attempts, error, delivery_id),
        )

    def delivery_retry(self, delivery_id: int, attempts: int, error: str, at: float) -> None:
        """Schedule the next attempt, unless the webhook was deleted meanwhile (then: dropped)."""
        self.conn().execute(
            "UPDATE deliveries SET attempts=?, last_error=?, next_attempt_at=?,"
            " state=CASE WHEN (SELECT active FROM webhooks WHERE id=deliveries.webhook_id)=1"
            " THEN 'pending' ELSE 'dropped' END WHERE id=?",
            (attempts, error, at, delivery_id),
        )
