"""Exceptions of the quality library.

    SophonError (sophon_cli.client.errors)
    ├── QualityError                 ffmpeg could not score the pair, or stalled          -> exit 1
    │   └── QualityUnavailableError  the ``quality`` extra (imageio-ffmpeg, av) is absent -> exit 1
    └── InputError
        └── MediaError               a missing file, not a video, no video stream         -> exit 2
            └── DurationMismatchError  the two durations differ beyond the tolerance      -> exit 2

Only the exception classes of ``sophon_cli.client.errors`` are shared (a module without imports);
nothing here knows about exit codes or command-line flags.
"""

from __future__ import annotations

from pathlib import Path

from sophon_cli.client.errors import InputError, SophonError

EXTRA_HINT = "install the quality extra: pip install 'sophon-cli[quality]'"


class QualityError(SophonError):
    """Scoring failed (ffmpeg exited with an error, stalled, or wrote no scores)."""


class QualityUnavailableError(QualityError):
    """imageio-ffmpeg or av is not installed."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"measuring quality needs {missing}, which is not installed", hint=EXTRA_HINT)
        self.missing = missing


class MediaError(InputError):
    """A file that cannot be compared: missing, unreadable, not a video, or without a video stream."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = None if path is None else Path(path)


class DurationMismatchError(MediaError):
    """The reference and the distorted video differ in duration by more than the tolerance."""

    def __init__(self, reference: float, distorted: float, tolerance: float) -> None:
        super().__init__(
            f"the videos differ in duration ({reference:.3f} s reference, {distorted:.3f} s distorted; "
            f"tolerance {tolerance:g} s)",
            hint="compare the matching source and output, or raise the duration tolerance",
        )
        self.reference = reference
        self.distorted = distorted
        self.tolerance = tolerance
