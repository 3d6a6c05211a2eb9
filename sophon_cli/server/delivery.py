"""Webhook deliveries: persisted in SQLite, sent by a background thread with the stdlib.

Each terminal transition of a job inserts one ``deliveries`` row per active webhook the job listed
(in the same transaction as the transition). The sender signs every attempt with the webhook's
secret: ``X-Turbo-Signature-256: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{raw_body}")>``,
``X-Turbo-Timestamp`` (RFC 3339) and ``X-Turbo-Event-Id``. An attempt times out after 10 s; up to
3 attempts with the configured delays between them; a 2xx ends it, anything else (a 3xx included:
redirects are not followed) is a failed attempt. Rows are leased while being
sent, so a restart (or a second process on the data dir) resumes pending deliveries: at-least-once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .store import Store
from .util import dumps, iso, new_id, now

log = logging.getLogger("sophon.server.delivery")

MAX_ATTEMPTS = 3
TIMEOUT = 10.0
EVENT_TYPES = {"completed": "job.completed", "failed": "job.failed", "canceled": "job.canceled"}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def event_for(job: dict[str, Any], webhook_id: str, t: float) -> tuple[str, bytes] | None:
    """The ``(event_id, body)`` of ``job``'s terminal event for one webhook (None: no event)."""
    if job["status"] not in EVENT_TYPES:
        return None
    event_id = new_id("evt")
    payload = {
        "event_id": event_id,
        "type": EVENT_TYPES[job["status"]],
        "timestamp": iso(t),
        "job_id": job["id"],
        "status": job["status"],
        "metadata": job.get("metadata") or {},
    }
    return event_id, dumps(payload).encode()


class _Refused(Exception):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is a failed attempt (the spec: any non-2xx is a failure and is retried): the
    redirect is never followed, so its target is never contacted unchecked."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError(code)


_OPENER = urllib.request.build_opener(_NoRedirect)


def _private_target(url: str) -> str | None:
    """Why a delivery must not go to ``url`` (it resolves to a refused address), or None."""
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    from .netcheck import refused_address

    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None  # let the attempt fail the ordinary way
    for info in infos:
        why = refused_address(ipaddress.ip_address(info[4][0].split("%")[0]))
        if why:
            return f"refused: the URL resolves to {why}"
    return None


class DeliveryWorker:
    def __init__(
        self, store: Store, retry_delays: tuple[float, ...], metrics, allow_insecure: bool = False
    ) -> None:
        self.allow_insecure = allow_insecure
        self.store = store
        self.retry_delays = tuple(retry_delays) or (10.0, 60.0)
        self.metrics = metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sophon-webhook")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sophon-delivery", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _delay(self, attempts_done: int) -> float:
        idx = min(attempts_done - 1, len(self.retry_delays) - 1)
        return self.retry_delays[idx]

    def _claim(self) -> list[dict[str, Any]]:
        return self.store.claim_deliveries(TIMEOUT + 20)

    def _next_due(self) -> float | None:
        return self.store.next_delivery_due()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for d in self._claim():
                    self._pool.submit(self._send, d)
                due = self._next_due()
                wait = 1.0 if due is None else max(0.01, min(1.0, due - now()))
            except Exception:  # keep the thread alive through transient DB errors
                log.exception("webhook delivery loop error")
                wait = 1.0
            self._wake.wait(wait)
            self._wake.clear()

    def _send(self, d: dict[str, Any]) -> None:
        body: bytes = d["body"]
        ts = iso(now()) or ""
        req = urllib.request.Request(
            d["url"],
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "sophon-local-server",
                "X-Turbo-Signature-256": sign(d["secret"], ts, body),
                "X-Turbo-Timestamp": ts,
                "X-Turbo-Event-Id": d["event_id"],
            },
        )
        error = None if self.allow_insecure else _private_target(d["url"])
        try:
            if error is not None:
                raise _Refused(error)
            with _OPENER.open(req, timeout=TIMEOUT) as resp:
                code = resp.status
                resp.read(65536)
            if not 200 <= code < 300:
                error = f"HTTP {code}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except _Refused:
            pass
        except Exception as exc:  # timeouts, refused connections, TLS errors...
            error = type(exc).__name__
        attempts = d["attempts"] + 1
        try:
            if error is None:
                self.store.delivery_delivered(d["id"], attempts)
                self.metrics.inc("sophon_webhook_deliveries_total", outcome="delivered")
            elif attempts >= MAX_ATTEMPTS:
                self.store.delivery_dropped(d["id"], attempts, error)
                self.metrics.inc("sophon_webhook_deliveries_total", outcome="dropped")
                log.warning(
                    "webhook %s: event %s dropped after %d attempts (%s)",
                    d["webhook_id"],
                    d["event_id"],
                    attempts,
                    error,
                )
            else:
                self.store.delivery_retry(d["id"], attempts, error, now() + self._delay(attempts))
                self.metrics.inc("sophon_webhook_deliveries_total", outcome="retry")
        finally:
            self._wake.set()
