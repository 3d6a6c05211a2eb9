"""``serve()`` tells its caller what happens as typed events (``Listening``, ``IdleShutdown``,
``Stopped``), so ``sophon server`` renders them instead of matching the server's own text."""

from __future__ import annotations

import threading

import httpx
import pytest

from sophon_cli.server.config import ServerConfig
from sophon_cli.server.instance import read_state
from sophon_cli.server.runner import IdleShutdown, Listening, Stopped, StopReason, serve


@pytest.mark.timeout(120)
@pytest.mark.parametrize("keys", [None, ["given-key-0123456789", "other-key-0123456789"]])
def test_serve_tells_listening_then_idle_then_stopped(tmp_path, keys):
    config = ServerConfig(data_dir=tmp_path / "srv", api_keys=keys or [], idle_timeout=1.0)
    events: list = []
    seen_running: list = []

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, Listening):  # told once it answers, with server.json written
            state = read_state(config.data_dir)
            seen_running.append(
                (state.url if state else None, httpx.get(event.url + "/healthz", timeout=30).status_code)
            )

    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(serve(config, on_event=on_event)), daemon=True)
    runner.start()
    runner.join(timeout=90)
    assert not runner.is_alive(), events
    assert codes == [0]
    assert [type(e) for e in events] == [Listening, IdleShutdown, Stopped], events
    listening, idle, stopped = events
    assert seen_running == [(listening.url, 200)]
    assert listening.data_dir == config.data_dir
    if keys:
        assert listening.key_file is None and listening.key_count == 2
        assert listening.lines()[-1] == "API keys: 2 configured (not printed)"
    else:
        assert listening.key_file == config.data_dir / "api_key" and listening.key_count == 1
        assert listening.lines()[-1] == f"API key: stored in {listening.key_file} (not printed)"
        assert listening.key_file.read_text().strip() not in " ".join(listening.lines())
    assert listening.lines()[0] == f"sophon local server listening on {listening.url}"
    assert idle.idle_timeout == 1.0 and idle.lines() == ("idle for 1s; shutting down",)
    assert stopped.reason is StopReason.IDLE and stopped.lines() == ("sophon local server stopped",)
    assert read_state(config.data_dir) is None  # server.json removed before Stopped
