"""Job workers: claim queued jobs atomically in SQLite and encode them with ffmpeg/libx265.

Test hooks (documented for the encode-pipeline tests; they only exist on the local server):

- ``metadata["sophon_local_fail"] = true`` — the job fails in its encoding phase with the error
  "forced failure (metadata sophon_local_fail)"; a string value is used as the error text.
- ``metadata["sophon_local_delay"] = SECONDS`` — the job waits that long (at most 600 s) in its
  encoding phase before running ffmpeg; canceling interrupts the wait. Useful for cancel tests.
- ``metadata["sophon_local_realtime"] = true`` — ffmpeg reads the source at its own frame rate, so
  the encode itself runs (and can be canceled) for about the clip's duration.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sophon_cli.childenv import child_environment

from . import media
from .delivery import event_for
from .store import Store
from .util import now

log = logging.getLogger("sophon.server.worker")

PROGRESS_INTERVAL = 0.25  # at most 4 progress writes per second per job
PHASE_SPAN = {
    "probing": (0.0, 5.0),
    "encoding": (5.0, 90.0),
    "muxing": (90.0, 95.0),
    "uploading_output": (95.0, 100.0),
}
_LIVE_OWNERS: set[str] = set()
_HOST = socket.gethostname()


class JobFailure(Exception):
    """The job cannot be completed; the message is shown on the job (no paths, no secrets)."""


class _Stolen(Exception):
    """The job was canceled or is no longer ours; stop working on it quietly."""


def owner_is_dead(owner: str) -> bool:
    try:
        host, pid_text, _nonce = owner.split(":")
        pid = int(pid_text)
    except ValueError:
        return True
    if host != _HOST:
        return False  # cannot tell; the lease decides
    if pid == os.getpid():
        return owner not in _LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def progress_doc(phase: str, phase_percent: float | None, **extra: Any) -> dict[str, Any]:
    lo, hi = PHASE_SPAN.get(phase, (0.0, 0.0))
    pp = 0.0 if phase_percent is None else max(0.0, min(100.0, phase_percent))
    if phase == "queued":
        percent = 0.0
    elif phase == "completed":
        percent = 100.0
    else:
        percent = lo + (hi - lo) * pp / 100.0
    doc = {
        "phase": phase,
        "stage": phase,
        "percent": round(percent, 2),
        "phase_percent": None if phase_percent is None else round(pp, 2),
        "fps": None,
        "eta_seconds": None,
        "frames_done": None,
        "frames_total": None,
    }
    doc.update(extra)
    return doc


def finish_job(store: Store, job_id: str, status: str, *, owner: str | None = None, **fields: Any):
    """Move a non-terminal job to ``status`` (terminal) and queue its webhook events, atomically.

    Returns the updated job row, or None if the job was already terminal (or not ``owner``'s).
    """
    return store.finish_job(job_id, status, owner=owner, fields=fields, events=event_for)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class WorkerPool:
    def __init__(
        self,
        store: Store,
        data_dir: Path,
        *,
        workers: int,
        lease: float,
        metrics,
        on_terminal,
        retention: float = 7 * 24 * 3600.0,
    ):
        self.retention = retention
        self.store = store
        self.data_dir = data_dir
        self.outputs = data_dir / "outputs"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.n = workers
        self.lease = lease
        self.metrics = metrics
        self.on_terminal = on_terminal  # called after a terminal transition (wakes the delivery thread)
        self.owner = f"{_HOST}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._canceled: set[str] = set()
        self.busy = 0
        self._ffmpeg: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def ffmpeg(self) -> str:
        if self._ffmpeg is None:
            import imageio_ffmpeg

            self._ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        return self._ffmpeg

    def start(self) -> None:
        _LIVE_OWNERS.add(self.owner)
        self.store.requeue_stale(owner_is_dead)
        self.store.release_stale_assembling(owner_is_dead)
        for i in range(self.n):
            t = threading.Thread(target=self._loop, name=f"sophon-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._maintain, name="sophon-maintenance", daemon=True)
        t.start()
        self._threads.append(t)

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def notify(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._canceled.add(job_id)
            proc = self._procs.get(job_id)
        if proc is not None:
            _kill(proc)
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            _kill(p)
        for t in self._threads:
            t.join(timeout=10)
        _LIVE_OWNERS.discard(self.owner)

    # -- loops -----------------------------------------------------------------------------------
    def _maintain(self) -> None:
        while not self._stop.wait(5.0):
            try:
                if self.store.requeue_stale(owner_is_dead):
                    self._wake.set()
                self.store.release_stale_assembling(owner_is_dead)
                expire_uploads(self.store)
                self._drop_expired_outputs()
            except Exception:
                log.exception("maintenance error")

    def _drop_expired_outputs(self) -> None:
        """Delete encoded outputs past their retention (an "original" output is the source: kept)."""
        for path in self.store.outputs_past_retention(now()):
            p = Path(path)
            if p.parent == self.outputs:
                p.unlink(missing_ok=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_job(self.owner, self.lease)
            except Exception:
                log.exception("claiming a job failed")
                job = None
            if job is None:
                # a short timeout also picks up jobs queued by another process on this data dir
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            with self._lock:
                self.busy += 1
            try:
                self._run(job)
            except Exception:
                log.exception("job %s crashed", job["id"])
                finish_job(
                    self.store,
                    job["id"],
                    "failed",
                    owner=self.owner,
                    error="internal error in the local server worker",
                    status_reason="internal_error",
                )
                self.on_terminal()
            finally:
                with self._lock:
                    self.busy -= 1
                    self._procs.pop(job["id"], None)
                    self._canceled.discard(job["id"])

    # -- one job ---------------------------------------------------------------------------------
    def _update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            canceled = job_id in self._canceled
        if canceled or self._stop.is_set():
            raise _Stolen()
        if not self.store.update_owned_job(job_id, self.owner, self.lease, **fields):
            raise _Stolen()

    def _last_progress(self, job_id: str, job: dict[str, Any]) -> dict[str, Any]:
        row = self.store.get_job(job_id)
        return dict((row or job)["progress"])

    def _run(self, job: dict[str, Any]) -> None:
        jid = job["id"]
        try:
            self._process(job)
        except _Stolen:
            if self._stop.is_set():
                self.store.release_job(jid, self.owner)  # clean shutdown: back to the queue
        except JobFailure as exc:
            self.metrics.inc("sophon_jobs_finished_total", status="failed")
            row = finish_job(
                self.store,
                jid,
                "failed",
                owner=self.owner,
                error=str(exc),
                status_reason="encode_failed",
                progress=dict(self._last_progress(jid, job), phase="failed", stage="failed"),
            )
            if row is not None:
                self.on_terminal()
        finally:
            for p in self.outputs.glob(f"{jid}.tmp*"):
                try:
                    p.unlink()
                except OSError:
                    pass

    def _process(self, job: dict[str, Any]) -> None:
        jid = job["id"]
        opts = job["options"]
        meta = job["metadata"] or {}
        upload = self.store.get_upload(job["upload_id"])
        self._update(jid, status="probing", progress=progress_doc("probing", 0.0))
        if upload is None or not upload.get("path") or not Path(upload["path"]).exists():
            raise JobFailure("the source upload's data is gone; upload the file again")
        src = Path(upload["path"])
        info = upload.get("probe") or media.probe(src)
        profile = job["profile"]
        effective = media.auto_profile(info) if profile == "sophon-auto" else profile
        frames_total = info.get("frames")
        self._update(
            jid,
            effective_profile_id=effective,
            progress=progress_doc("probing", 100.0, frames_total=frames_total),
        )

        # -- encoding
        self._update(
            jid, status="encoding", progress=progress_doc("encoding", 0.0, frames_total=frames_total)
        )
        delay = meta.get("sophon_local_delay")
        if isinstance(delay, (int, float)) and delay > 0:
            deadline = time.monotonic() + min(float(delay), 600.0)
            while time.monotonic() < deadline:
                self._stop.wait(min(0.1, max(0.0, deadline - time.monotonic())))
                self._update(jid)  # raises when canceled / shutting down; renews the lease
        fail = meta.get("sophon_local_fail")
        if fail:
            raise JobFailure(fail if isinstance(fail, str) else "forced failure (metadata sophon_local_fail)")

        container = opts.get("container") or "mp4"
        tmp = self.outputs / f"{jid}.tmp.{container}"
        cmd = media.ffmpeg_command(
            self.ffmpeg(),
            src,
            tmp,
            profile=effective,
            info=info,
            container=container,
            audio=bool(opts.get("audio")),
            target_height=opts.get("target_height"),
            realtime=meta.get("sophon_local_realtime") is True,
        )
        self._encode(jid, cmd, info)

        # -- muxing: check what ffmpeg produced
        self._update(jid, status="muxing", progress=progress_doc("muxing", 0.0, frames_total=frames_total))
        try:
            out = media.output_info(tmp)
        except Exception as exc:
            raise JobFailure("the encoder produced an unreadable file") from exc
        if out["video_codec"] != "hevc":
            raise JobFailure(f"the encoder produced {out['video_codec']} instead of HEVC")

        # -- uploading_output: hash and store the result
        self._update(jid, status="uploading_output", progress=progress_doc("uploading_output", 0.0))
        out_bytes = tmp.stat().st_size
        src_bytes = int(upload["file_size"])
        retention = now() + self.retention
        if profile == "sophon-auto" and out_bytes >= src_bytes:
            # nothing better than the source was made: hand back the original
            output_path = src
            output = {
                "state": "available",
                "container": container,
                "audio": bool(info.get("audio_codec")),  # the original keeps its audio
                "target_height": opts.get("target_height"),
                "width": info["width"],
                "height": info["height"],
                "bytes": src_bytes,
                "sha256": upload["sha256"],
                "retention_expires_at": retention,
            }
            final, saved = "original", 0.0
            tmp.unlink()
        else:
            digest = sha256_file(tmp)
            output_path = self.outputs / f"{jid}.{container}"
            os.replace(tmp, output_path)
            output = {
                "state": "available",
                "container": container,
                "audio": out["audio"],
                "target_height": opts.get("target_height"),
                "width": out["width"],
                "height": out["height"],
                "bytes": out_bytes,
                "sha256": digest,
                "retention_expires_at": retention,
            }
            final = "encoded"
            saved = round((1.0 - out_bytes / src_bytes) * 100.0, 2) if src_bytes else 0.0
        row = finish_job(
            self.store,
            jid,
            "completed",
            owner=self.owner,
            output=output,
            output_path=str(output_path),
            final_artifact=final,
            saved_percent=saved,
            progress=progress_doc("completed", 100.0, frames_done=frames_total, frames_total=frames_total),
        )
        if row is None:
            if output_path != src:
                output_path.unlink(missing_ok=True)
            raise _Stolen()
        self.metrics.inc("sophon_jobs_finished_total", status="completed")
        self.on_terminal()

    def _encode(self, jid: str, cmd: list[str], info: dict[str, Any]) -> None:
        frames_total = info.get("frames")
        duration = float(info.get("duration") or 0.0)
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=child_environment()
            )
            with self._lock:
                self._procs[jid] = proc
                canceled = jid in self._canceled
            if canceled:
                _kill(proc)
            block: dict[str, str] = {}
            last = 0.0
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    key, _, value = raw.decode("utf-8", "replace").strip().partition("=")
                    if key != "progress":
                        block[key] = value
                        continue
                    t = time.monotonic()
                    if value == "end" or t - last < PROGRESS_INTERVAL:
                        continue
                    last = t
                    self._update(jid, progress=_encode_progress(block, frames_total, duration))
            except _Stolen:
                _kill(proc)
                proc.wait()
                raise
            rc = proc.wait()
            with self._lock:
                self._procs.pop(jid, None)
                canceled = jid in self._canceled
            if canceled or self._stop.is_set():
                raise _Stolen()
            if rc != 0:
                err.seek(0)
                lines = [ln for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()]
                detail = lines[-1].strip()[:200] if lines else f"exit status {rc}"
                raise JobFailure(f"encoding failed: {detail}")
        self.metrics.inc("sophon_encodes_total")


def _encode_progress(block: dict[str, str], frames_total: int | None, duration: float) -> dict[str, Any]:
    def num(key: str) -> float | None:
        try:
            return float(block[key])
        except (KeyError, ValueError):
            return None

    frame = num("frame")
    fps = num("fps")
    out_us = num("out_time_us") or num("out_time_ms")
    pp = None
    if frames_total and frame is not None:
        pp = 100.0 * frame / frames_total
    elif duration and out_us is not None:
        pp = 100.0 * (out_us / 1e6) / duration
    eta = None
    if fps and frames_total and frame is not None and fps > 0:
        eta = max(0, int(round((frames_total - frame) / fps)))
    return progress_doc(
        "encoding",
        min(pp or 0.0, 100.0),
        fps=fps,
        eta_seconds=eta,
        frames_done=int(frame) if frame is not None else None,
        frames_total=frames_total,
    )


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.kill()
    except OSError:
        pass


def expire_uploads(store: Store) -> int:
    """Cancel upload sessions still uploading past their expiry and delete their staged data."""
    rows = store.uploads_past_expiry(now())
    for r in rows:
        if store.cancel_upload(r["id"], only_if="uploading") and r["path"]:
            Path(r["path"]).unlink(missing_ok=True)
    return len(rows)


__all__ = ["WorkerPool", "finish_job", "owner_is_dead", "expire_uploads"]
