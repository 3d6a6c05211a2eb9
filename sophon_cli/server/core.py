"""The server's long-lived parts wired together: store, token signer, faults, workers, deliveries."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from .config import (
    DB_FILE,
    TOKEN_SECRET_FILE,
    ServerConfig,
    ensure_private_dir,
    read_or_create_secret,
    resolve_api_keys,
)
from .delivery import DeliveryWorker
from .faults import FaultInjector
from .store import Store
from .tokens import TokenSigner
from .worker import WorkerPool


class Metrics:
    """Tiny thread-safe counter registry rendered in Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            self._counters[key] += value

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._counters)


class Core:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        ensure_private_dir(config.data_dir)
        for sub in ("uploads", "sources", "outputs"):
            (config.data_dir / sub).mkdir(exist_ok=True)
        self.api_keys, self.key_file = resolve_api_keys(config.data_dir, config.api_keys)
        self.store = Store(config.data_dir / DB_FILE)
        self.signer = TokenSigner(read_or_create_secret(config.data_dir / TOKEN_SECRET_FILE))
        self.faults = FaultInjector(config.faults, config.faults_seed)
        self.metrics = Metrics()
        self.delivery = DeliveryWorker(
            self.store, config.webhook_retry_delays, self.metrics, config.allow_insecure_webhooks
        )
        self.workers = WorkerPool(
            self.store,
            config.data_dir,
            workers=config.workers,
            lease=config.lease_seconds,
            retention=config.retention,
            metrics=self.metrics,
            on_terminal=self.delivery.notify,
        )
        self.started_at = time.time()
        self.last_request = time.monotonic()
        self.in_flight = 0
        self._started = False

    def start(self) -> None:
        if not self._started:
            self.workers.start()
            self.delivery.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self.workers.stop()
            self.delivery.stop()
            self._started = False
        self.store.close()

    def idle_for(self) -> float:
        """Seconds since the last request, or 0 while requests or jobs are active."""
        if self.in_flight or self.workers.busy or self.store.count_active_jobs():
            return 0.0
        return time.monotonic() - self.last_request
