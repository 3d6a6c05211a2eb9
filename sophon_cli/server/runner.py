"""Running the local server: :class:`LocalServer` (uvicorn in a background thread, for tests and
``--local`` in-process use) and :func:`serve` (foreground, for ``sophon server``)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from . import instance
from .config import ServerConfig


def _uvicorn_server(core, host: str, port: int):
    import functools

    import uvicorn

    from .app import build_app

    http: Any
    try:  # httptools, body chunks uncopied (httpbody), headers bounded in time (headertime) and
        # sendfile for downloads (zerocopy)
        from .zerocopy import ZeroCopyProtocol  # needs httptools (the server extra)

        http = functools.partial(ZeroCopyProtocol, header_timeout=core.config.header_timeout_seconds)
    except ImportError:
        http = "auto"
    app = build_app(core)
    cfg = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(cfg)


class _Instance:
    """One server on one data dir, opened in the one order both ways of running it share: take
    the data dir's lock (:class:`~.instance.DataDirInUse`), open the listening socket
    (:class:`~.instance.BindError`), then open the database and start the workers. Nothing is
    touched in the data dir when another server holds it."""

    def __init__(self, config: ServerConfig) -> None:
        from .core import Core
        from .memtune import tune_malloc

        self.config = config
        self.lock = instance.hold(config.data_dir)
        tune_malloc()  # received chunks reuse freed heap memory instead of fresh pages
        try:
            self.sock = instance.bind(config.host, config.port)
            try:
                self.core = Core(config)
                self.core.start()
            except BaseException:
                self.sock.close()
                raise
        except BaseException:
            self.lock.release()
            raise
        self.port = int(self.sock.getsockname()[1])
        self.url = instance.url_for(config.host, self.port)
        self.server = _uvicorn_server(self.core, config.host, self.port)

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def close(self) -> None:
        try:
            self.core.stop()
        finally:
            self.sock.close()
            self.lock.release()


class LocalServer:
    """The local SOPHON-compatible server on 127.0.0.1, served from a background thread.

    >>> with LocalServer(tmp_path, api_keys=["k"]) as srv:
    ...     srv.url  # 'http://127.0.0.1:41234'

    Raises :class:`~.instance.DataDirInUse` when another server runs on the data dir and
    :class:`~.instance.BindError` when the port cannot be opened.
    """

    def __init__(self, data_dir: str | os.PathLike, **options: Any) -> None:
        """``options`` are :class:`~.config.ServerConfig` fields (``api_keys``, ``port``, ``workers``,
        ``chunk_size``, ``faults``, ``webhook_retry_delays``, ``request_log``, ...)."""
        self.config = ServerConfig(data_dir=Path(data_dir), **options)
        self._instance: _Instance | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never shows the keys
        return f"LocalServer(url={self.url if self.port else None!r}, data_dir={str(self.data_dir)!r})"

    @property
    def core(self) -> Any:
        return self._instance.core if self._instance else None

    @property
    def port(self) -> int | None:
        return self._instance.port if self._instance else None

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def request_log(self) -> Path | None:
        return self.config.request_log

    @property
    def api_keys(self) -> list[str]:
        return list(self.core.api_keys) if self.core else list(self.config.api_keys)

    @property
    def key_file(self) -> Path | None:
        return self.core.key_file if self.core else None

    @property
    def url(self) -> str:
        if self._instance is None:
            raise RuntimeError("the server is not started")
        return self._instance.url

    def start(self) -> LocalServer:
        if self._thread is not None:
            return self
        inst = _Instance(self.config)
        thread = threading.Thread(target=inst.run, name="sophon-local-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not inst.server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                inst.server.should_exit = True
                thread.join(timeout=5)
                inst.close()
                raise RuntimeError(f"the local server did not start on {inst.url}")
            time.sleep(0.01)
        self._instance, self._thread = inst, thread
        return self

    def stop(self) -> None:
        if self._thread is None or self._instance is None:
            return
        self._instance.server.should_exit = True
        self._thread.join(timeout=15)
        self._thread = None
        self._instance.close()
        # the port and core stay readable (tests inspect a stopped server's store path)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Listening:
    """The foreground server accepts requests on ``url`` (``server.json`` is written)."""

    url: str
    data_dir: Path
    key_file: Path | None  # where the data dir's API key is stored; None when keys were given
    key_count: int

    def lines(self) -> tuple[str, ...]:
        if self.key_file is not None:
            keys = f"API key: stored in {self.key_file} (not printed)"
        else:
            keys = f"API keys: {self.key_count} configured (not printed)"
        return (f"sophon local server listening on {self.url}", f"data dir: {self.data_dir}", keys)


@dataclass(frozen=True)
class IdleShutdown:
    """No request for ``idle_timeout`` seconds: the server is shutting down."""

    idle_timeout: float

    def lines(self) -> tuple[str, ...]:
        return (f"idle for {self.idle_timeout:g}s; shutting down",)


class StopReason(Enum):
    SIGNAL = "signal"  # SIGINT (Ctrl-C) or SIGTERM
    IDLE = "idle"  # after an IdleShutdown
    ENDED = "ended"  # the server ended by itself (e.g. it could not start serving)


@dataclass(frozen=True)
class Stopped:
    """The server has stopped and cleaned up (``server.json`` removed, jobs given back)."""

    reason: StopReason

    def lines(self) -> tuple[str, ...]:
        return ("sophon local server stopped",)


ServerEvent = Listening | IdleShutdown | Stopped


def _print_event(event: ServerEvent) -> None:
    for line in event.lines():
        print(line, file=sys.stderr, flush=True)


class _Shutdown(Exception):
    pass


def _raise_shutdown(signum, frame) -> None:
    raise _Shutdown()


def serve(config: ServerConfig, *, on_event: Callable[[ServerEvent], None] | None = None) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM (or ``config.idle_timeout``).

    Writes ``server.json`` (url, pid; 0600) in the data dir once listening, removes it on exit.
    Tells ``on_event`` (by default: their ``lines()`` on stderr) :class:`Listening` once it is,
    :class:`IdleShutdown` if it stops for being idle, and :class:`Stopped` last, from the thread
    where it happens. Raises :class:`~.instance.DataDirInUse` or :class:`~.instance.BindError`
    before starting.
    """
    tell = on_event or _print_event
    inst = _Instance(config)
    core, server = inst.core, inst.server
    stop = threading.Event()
    idle = threading.Event()

    def watch() -> None:
        while not server.started:
            if stop.wait(0.01):
                return
        instance.write_state(config.data_dir, inst.url)
        tell(Listening(inst.url, config.data_dir, core.key_file, len(core.api_keys)))
        while config.idle_timeout and not stop.wait(1.0):
            if core.idle_for() >= config.idle_timeout:
                idle.set()
                tell(IdleShutdown(config.idle_timeout))
                server.should_exit = True
                return

    watcher = threading.Thread(target=watch, name="sophon-server-watch", daemon=True)
    watcher.start()
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal with the
    # previous handler; make that handler end run() with an exception we catch, so the cleanup
    # below (server.json removal, workers giving their jobs back) always happens.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _raise_shutdown)
    reason = StopReason.ENDED
    try:
        inst.run()
    except _Shutdown:
        reason = StopReason.SIGNAL
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.set()
        instance.clear_state(config.data_dir)
        inst.close()
        tell(Stopped(StopReason.IDLE if idle.is_set() else reason))
    return 0 if server.started else 1
