"""What ``-v`` / ``-vv`` and the retry notices look like on stderr (the library emits the events).

* ``-v``: one line per HTTP attempt: ``http: GET /v1/jobs/job_1 -> 200 in 0.012 s (request id …)``
  (a failed attempt says what failed instead of a status);
* ``-vv``: also the request and response headers, credentials shown as ``***``;
* every retry, on a terminal or with ``-v``: ``retrying (n/N) in 1.2 s: HTTP 503 on GET /v1/jobs``.
  Piped without ``-v`` the retries stay silent (scripts read one error line); ``-q`` silences them.

Every field comes from :mod:`sophon_cli.client.trace` / :mod:`sophon_cli.client.retry` events, which
hold no API key or download token; the text is made terminal-safe once more here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sophon_cli.client.text import safe_field

if TYPE_CHECKING:  # pragma: no cover
    from sophon_cli.cli.output import Output
    from sophon_cli.client.retry import RetryEvent
    from sophon_cli.client.trace import HttpEvent


def http_lines(event: HttpEvent, level: int) -> list[str]:
    """The stderr lines of one HTTP attempt at verbosity ``level`` (1 or 2)."""
    outcome = (
        f"-> {event.status}" if event.status is not None else f"-> failed ({event.error or 'no response'})"
    )
    if event.status is not None and event.error:
        outcome += f" ({event.error})"
    line = f"http: {event.method} {event.path} {outcome} in {event.elapsed:.3f} s"
    if event.attempt > 1:
        line += f" (attempt {event.attempt})"
    if event.request_id:
        line += f" (request id {event.request_id})"
    lines = [safe_field(line, (), 1000)]
    if level >= 2:
        lines += [safe_field(f"http:   > {k}: {v}", (), 1000) for k, v in event.request_headers]
        lines += [safe_field(f"http:   < {k}: {v}", (), 1000) for k, v in event.response_headers]
    return lines


def retry_line(event: RetryEvent) -> str:
    where = f" on {event.method} {event.path}" if event.method else ""
    retries = max(event.max_attempts - 1, 1)
    return safe_field(
        f"retrying ({event.attempt}/{retries}) in {event.delay:.1f} s: {event.reason}{where}", (), 300
    )


class Verbose:
    """Renders library events on the Output's stderr (through rich on a terminal, so live progress
    displays stay intact)."""

    def __init__(self, out: Output, level: int) -> None:
        self.out = out
        self.level = level

    def attach(self, client: Any) -> None:
        if self.level >= 1:
            client.http_observers.append(self.on_http)
        if not self.out.quiet and (self.level >= 1 or self.out.err_is_tty):
            client.retry_observers.append(self.on_retry)

    def on_http(self, event: HttpEvent) -> None:
        for line in http_lines(event, self.level):
            self._write(line)

    def on_retry(self, event: RetryEvent) -> None:
        self._write(retry_line(event))

    def _write(self, line: str) -> None:
        if self.out.err_is_tty:
            self.out.err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.out.stderr.write(line + "\n")
            self.out.stderr.flush()


def attach(client: Any, out: Output, level: int) -> None:
    """Install the ``-v``/``-vv`` and retry renderers on ``client``."""
    Verbose(out, level).attach(client)


__all__ = ["Verbose", "attach", "http_lines", "retry_line"]
