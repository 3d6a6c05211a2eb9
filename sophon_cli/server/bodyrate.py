"""The minimum rate of a request body: a body that keeps trickling is abandoned like a stalled one.

The idle bound (``body_idle_seconds``) cuts a body that sends nothing for that long; a client that
sends one byte just inside it would hold the request (and an upload's part lock) forever. So a
body must also arrive at ``body_min_rate`` bytes/s on average over every stretch of at least
``body_rate_window`` seconds that the server spent *waiting* for it:

- only the time spent waiting in ``receive`` counts, so the server's own pauses (a part lock held
  by an earlier copy, a slow disk write, a busy event loop) are never counted against the client,
  and bytes that waited in buffers count as arrived at once;
- the rule looks at whole windows only (a burst and a pause inside one window average out) and
  never refuses the message that completes the body;
- it does not depend on the body's length: a 10 GiB part over a slow link is cut only if the link
  itself stays below the rate for a window, however long the whole body takes.

The default, 256 bytes/s over 120 s (2 kbit/s, a quarter of the rate below which the project's own
client calls a download stalled), is far below any real link, even with several parts sharing it;
what it ends is a trickle. A refused body gets the idle cut's answer (400 ``validation_error``,
``Connection: close``; see ``app._stalled``). ``body_min_rate`` 0 turns the rule off.
"""

from __future__ import annotations

import math
import os

from .errors import BodyStalled

BODY_MIN_RATE_ENV = "SOPHON_SERVER_BODY_MIN_RATE"
BODY_MIN_RATE = 256.0  # bytes/s a request body must average over every window (0: no minimum)
BODY_RATE_WINDOW_ENV = "SOPHON_SERVER_BODY_RATE_WINDOW_SECONDS"
BODY_RATE_WINDOW = 120.0  # seconds of waiting for the body over which the rate is averaged


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None


def min_rate_default() -> float:
    """``$SOPHON_SERVER_BODY_MIN_RATE`` if set, else :data:`BODY_MIN_RATE`."""
    return _env_number(BODY_MIN_RATE_ENV, BODY_MIN_RATE)


def window_default() -> float:
    """``$SOPHON_SERVER_BODY_RATE_WINDOW_SECONDS`` if set, else :data:`BODY_RATE_WINDOW`."""
    return _env_number(BODY_RATE_WINDOW_ENV, BODY_RATE_WINDOW)


def check_settings(min_rate: float, window: float) -> tuple[float, float]:
    """The two settings as floats; ValueError naming the variable for a value that is no rate
    (negative, nan, inf) or no window (not > 0)."""
    min_rate, window = float(min_rate), float(window)
    if not (0 <= min_rate < math.inf):
        raise ValueError(f"body_min_rate ({BODY_MIN_RATE_ENV}) must be a number of bytes/s >= 0")
    if not (0 < window < math.inf):
        raise ValueError(f"body_rate_window ({BODY_RATE_WINDOW_ENV}) must be a number of seconds > 0")
    return min_rate, window


class BodyTooSlow(BodyStalled):
    """The body arrived below the minimum rate over a whole window (answered like a stall)."""

    def __init__(self, received: int, waited: float, min_rate: float) -> None:
        self.received, self.waited, self.min_rate = received, waited, min_rate
        super().__init__(waited)

    @property
    def reason(self) -> str:
        return (
            f"arrived at {self.received / self.waited:.3g} bytes/s over {self.waited:.0f}s, below the"
            f" minimum of {self.min_rate:g} bytes/s"
        )


class BodyRate:
    """The rate rule for one request body: call :meth:`arrived` after every ``receive``."""

    __slots__ = ("min_rate", "window", "_waited", "_received")

    def __init__(self, min_rate: float, window: float) -> None:
        self.min_rate, self.window = check_settings(min_rate, window)
        self._waited = 0.0  # seconds spent waiting for the body in the current window
        self._received = 0  # bytes received in the current window

    def arrived(self, nbytes: int, waited: float, done: bool) -> None:
        """``nbytes`` arrived after ``waited`` seconds in ``receive``; ``done``: the body is now
        complete. Raises :class:`BodyTooSlow` when a whole window averaged below the rate."""
        if done or not self.min_rate:
            return
        self._waited += max(0.0, waited)
        self._received += nbytes
        if self._waited < self.window:
            return
        if self._received < self.min_rate * self._waited:
            raise BodyTooSlow(self._received, self._waited, self.min_rate)
        self._waited, self._received = 0.0, 0
