"""Running the local server: :class:`LocalServer` (uvicorn in a background thread, for tests and
``--local`` in-process use) and :func:`serve` (foreground, for ``sophon server``)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import STATE_FILE, ServerConfig, write_private_file


def _uvicorn_server(core, host: str, port: int):
    import uvicorn

    from .app import build_app

    app = build_app(core)
    cfg = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(cfg)


def _bound_port(server) -> int:
    for s in server.servers:
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the server has no listening socket")


class LocalServer:
    """The local SOPHON-compatible server on 127.0.0.1, served from a background thread.

    >>> with LocalServer(tmp_path, api_keys=["k"]) as srv:
    ...     srv.url  # 'http://127.0.0.1:41234'
    """

    def __init__(self, data_dir: str | os.PathLike, **options: Any) -> None:
        """``options`` are :class:`~.config.ServerConfig` fields (``api_keys``, ``port``, ``workers``,
        ``chunk_size``, ``faults``, ``webhook_retry_delays``, ``request_log``, ...)."""
        self.config = ServerConfig(data_dir=Path(data_dir), **options)
        self.core: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def __repr__(self) -> str:  # never shows the keys
        return f"LocalServer(url={self.url if self.port else None!r}, data_dir={str(self.data_dir)!r})"

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
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://{self.config.host}:{self.port}"

    def start(self) -> LocalServer:
        from .core import Core

        if self._thread is not None:
            return self
        self.core = Core(self.config)
        self.core.start()
        self._server = _uvicorn_server(self.core, self.config.host, self.config.port)
        self._thread = threading.Thread(target=self._server.run, name="sophon-local-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.core.stop()
                raise RuntimeError(f"the local server did not start on {self.config.host}:{self.config.port}")
            time.sleep(0.01)
        self.port = _bound_port(self._server)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._thread = None
        self.core.stop()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Shutdown(Exception):
    pass


def _raise_shutdown(signum, frame) -> None:
    raise _Shutdown()


def serve(config: ServerConfig, *, announce: Callable[[str], None] | None = None) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM (or ``config.idle_timeout``).

    Writes ``server.json`` (url, pid; 0600) in the data dir once listening, removes it on exit.
    """
    from .core import Core

    say = announce or (lambda text: print(text, file=sys.stderr, flush=True))
    core = Core(config)
    core.start()
    server = _uvicorn_server(core, config.host, config.port)
    state_path = config.data_dir / STATE_FILE
    stop = threading.Event()

    def watch() -> None:
        while not server.started:
            if stop.wait(0.01):
                return
        port = _bound_port(server)
        host = config.host if config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host}:{port}"
        write_private_file(
            state_path, json.dumps({"url": url, "pid": os.getpid(), "started_at": time.time()}) + "\n"
        )
        say(f"sophon local server listening on {url}")
        say(f"data dir: {config.data_dir}")
        if core.key_file is not None:
            say(f"API key: stored in {core.key_file} (not printed)")
        else:
            say(f"API keys: {len(core.api_keys)} configured (not printed)")
        while config.idle_timeout and not stop.wait(1.0):
            if core.idle_for() >= config.idle_timeout:
                say(f"idle for {config.idle_timeout:g}s; shutting down")
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
    try:
        server.run()
    except _Shutdown:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.set()
        try:
            data = json.loads(state_path.read_text())
            if data.get("pid") == os.getpid():
                state_path.unlink()
        except (OSError, ValueError):
            pass
        core.stop()
        say("sophon local server stopped")
    return 0 if server.started else 1
