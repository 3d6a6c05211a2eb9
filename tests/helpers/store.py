"""The local server's own store, changed the one way a test may: the clock of an upload or an
output moved on.

- ``expire_uploads(server)`` every upload session the server holds is past its ``expires_at`` now
  (set to a second ago in its SQLite store), as if its TTL had run out; returns how many. The
  server reads ``expires_at`` from the store on every request, so this is what waiting out the
  TTL does, without the wait and without racing a short TTL against the work done before it.
- ``expire_outputs(server)`` the same for the output of every completed job: its
  ``retention_expires_at`` is a second ago, as if its retention had run out; returns how many.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def expire_uploads(server) -> int:
    con = sqlite3.connect(Path(server.data_dir) / "sophon.db", timeout=10)
    try:
        with con:
            changed = con.execute("UPDATE uploads SET expires_at = ?", (time.time() - 1.0,)).rowcount
    finally:
        con.close()
    assert changed, "the server holds no upload to expire"
    return changed


def expire_outputs(server) -> int:
    con = sqlite3.connect(Path(server.data_dir) / "sophon.db", timeout=10)
    try:
        with con:
            changed = con.execute(
                "UPDATE jobs SET output = json_set(output, '$.retention_expires_at', ?)"
                " WHERE status = 'completed' AND json_extract(output, '$.retention_expires_at') IS NOT NULL",
                (time.time() - 1.0,),
            ).rowcount
    finally:
        con.close()
    assert changed, "the server holds no completed job with an output to expire"
    return changed
