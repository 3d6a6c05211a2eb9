"""The batch engine behind ``sophon encode``: one persisted state machine per file.

Modules, one concern each:

- ``inputs``    sources: files, directories and globs expanded; shards
- ``naming``    ``EncodeOptions``, output names, cache and job keys
- ``entry``     the cache schema: ``FileEntry`` and its ``State`` (versioned)
- ``steps``     hash, upload, create job, finish (download), fall back: one file's steps
- ``scheduler`` the run loop (``Pipeline``) and the job watcher
- ``events``    ``Event`` / ``Progress`` a renderer subscribes to
- ``results``   ``FileResult`` / ``RunReport`` / ``PlanItem``: what a run made of each file

Typical use::

    from sophon_cli import encode
    sources, ignored = encode.expand_inputs(["videos/**/*.mov"])
    options = encode.EncodeOptions(profile="sophon-auto", output_dir=Path("out"))
    report = encode.Pipeline(client, StateStore(path), options, on_event=print).run(sources)

This package never prints and imports no CLI code.
"""

from __future__ import annotations

from sophon_cli.encode.entry import ENTRY_SCHEMA, FINISHED_STATES, FileEntry, Result, State
from sophon_cli.encode.events import Event, EventSink, Progress
from sophon_cli.encode.inputs import (
    VIDEO_EXTENSIONS,
    Source,
    expand_inputs,
    parse_shard,
    select_shard,
    shard_of,
)
from sophon_cli.encode.naming import (
    EncodeOptions,
    drop_own_outputs,
    entry_key,
    fallback_path_for,
    output_path_for,
)
from sophon_cli.encode.results import FileResult, PlanItem, RunReport, Unscored
from sophon_cli.encode.scheduler import HardInterrupt, JobWatcher, Pipeline

__all__ = [
    "ENTRY_SCHEMA",
    "FINISHED_STATES",
    "VIDEO_EXTENSIONS",
    "EncodeOptions",
    "Event",
    "EventSink",
    "FileEntry",
    "FileResult",
    "HardInterrupt",
    "JobWatcher",
    "Pipeline",
    "PlanItem",
    "Progress",
    "Result",
    "RunReport",
    "Source",
    "State",
    "Unscored",
    "drop_own_outputs",
    "entry_key",
    "expand_inputs",
    "fallback_path_for",
    "output_path_for",
    "parse_shard",
    "select_shard",
    "shard_of",
]
