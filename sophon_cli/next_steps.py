"""Next steps and options as data, for the library outside the client.

The library never words a hint in terms of the command line. An error whose next step is "use
another value of some option" carries it as data: :class:`Option` names the option as a concept
(the ``EncodeOptions`` field or setting it sets), :class:`Step` says what to do. Front ends word
them; the CLI does it in ``cli/hints.py`` (with the flags). ``hint``/``str()`` of these errors are
plain words for any other caller.
"""

from __future__ import annotations

import enum
from pathlib import Path

from sophon_cli.client.errors import InputError, TransportError


class Option(str, enum.Enum):
    """An option of a command, as a concept; the value is the library's name for it (the
    ``EncodeOptions`` field, ``expand_inputs``' parameter, ...)."""

    RECURSIVE = "recursive"  # descend into directory inputs
    OUTPUT_DIR = "output_dir"  # where outputs go
    NAME_TEMPLATE = "name_template"  # the output file name
    MIN_VMAF = "min_vmaf"  # the quality gate's threshold
    FALLBACK = "fallback"  # what is left when an encode is not kept
    CONTAINER = "container"  # the output container
    CONCURRENCY = "concurrency"  # files at once
    STATE_FILE = "state_file"  # the local state cache
    DATA_DIR = "data_dir"  # the local server's data directory


class Step(str, enum.Enum):
    """What to do next, for errors outside the client (the CLI words each one in ``cli/hints.py``)."""

    RECURSE = "recurse"  # a directory was given without recursion: recurse into it
    CHECK_PATTERN = "check_pattern"  # a glob matched nothing
    OTHER_OUTPUT_NAME = "other_output_name"  # an output would overwrite its own source
    KEEP_LAYOUT = "keep_layout"  # two inputs would be written to one output
    STATE_BUSY = "state_busy"  # another process holds the state file's lock
    STATE_UNWRITABLE = "state_unwritable"  # the state file could not be written
    SERVER_LOG = "server_log"  # the local server did not start: read its log, or run it in the foreground


class OptionError(InputError):
    """A bad value of one option: ``option`` names it; the message is ``before`` + its name +
    ``after``, so a front end can put its own name for it (the CLI: the flag)."""

    def __init__(self, option: Option, after: str, *, before: str = "", hint: str | None = None) -> None:
        self.option = option
        self.before = before
        self.after = after
        super().__init__(f"{before}{option.value}{after}", hint=hint)


class StepInputError(InputError):
    """Bad input whose next step is data (``step``); ``hint`` says it in plain words."""

    def __init__(self, message: str, *, step: Step, hint: str) -> None:
        self.step = step
        super().__init__(message, hint=hint)


class LocalServerStartError(TransportError):
    """The background local server on ``data_dir`` did not start; ``log`` is its log file."""

    def __init__(self, message: str, *, data_dir: Path, log: Path) -> None:
        self.step = Step.SERVER_LOG
        self.data_dir = data_dir
        self.log = log
        super().__init__(
            message, hint=f"see {log}, or run the local server in the foreground on {data_dir} to see why"
        )
