"""`sophon encode PATTERN...`: upload, encode and download many files; safe to re-run.

Parse the options, expand the inputs, hand them to ``sophon_cli.encode.Pipeline`` and render what
it reports through ``cli/encode_view.py``: on a TTY an overall progress bar plus one line per active
file (stderr), otherwise one plain line per state change (stderr); ``--json`` streams one NDJSON
event per state change and a final summary object (stdout). The summary table goes to stdout.

Exit codes: 0 when every file ended encoded or fell back as ``--fallback`` asked, 7 when some failed
(6 when the only failures were ``--timeout``), 130 on Ctrl-C (state saved; a second Ctrl-C stops at
once). A reader of stdout that goes away (``sophon encode ... --json | head -1``) stops the run the
way a Ctrl-C does (every step saved, no partial output in place, the reports still written) with the
exit code of a reader that stops early, 0 (7 if a file had already failed), and one notice.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from sophon_cli.cli import encode_view as _view
from sophon_cli.cli import options as opts
from sophon_cli.cli.context import get_ctx
from sophon_cli.cli.output import PipeClosed, plural


def encode_command(
    ctx: typer.Context,
    patterns: Annotated[
        list[str],
        typer.Argument(
            metavar="PATTERN",
            help='Files, directories (with --recursive) or globs; quote globs ("videos/**/*.mov") to let sophon expand them.',
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="Write outputs here (keeping the layout below a directory or glob) [default: next to each source].",
        ),
    ] = None,
    name_template: Annotated[
        str,
        typer.Option(
            "--name-template",
            metavar="TEMPLATE",
            help="Output file name; fields {stem} {ext} {name} {suffix} {profile}.",
        ),
    ] = "{stem}.sophon.{ext}",
    profile: opts.Profile = "sophon-auto",
    container: opts.Container = None,
    audio: opts.Audio = None,
    height: opts.Height = None,
    webhook: opts.Webhooks = None,
    metadata: opts.Metadata = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", metavar="N", help="Files uploaded/downloaded at once.")
    ] = 2,
    part_concurrency: Annotated[
        int, typer.Option("--part-concurrency", metavar="N", help="Parts uploaded at once within each file.")
    ] = 4,
    fallback: Annotated[
        str,
        typer.Option(
            "--fallback",
            metavar="copy|skip|fail",
            help="When no smaller encode is made (job failed, original kept, output larger, VMAF below "
            "--min-vmaf): copy the original to the output path, write nothing, or count the file as failed.",
        ),
    ] = "copy",
    min_vmaf: Annotated[
        float | None,
        typer.Option(
            "--min-vmaf",
            metavar="SCORE",
            min=0.0,
            max=100.0,
            help="Score each output against its source; below this mean VMAF keep the original (--fallback).",
        ),
    ] = None,
    check_quality: Annotated[
        bool,
        typer.Option("--check-quality", help="Score each output (VMAF, SSIM, PSNR) without a threshold."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Start fresh jobs even for files already done or in progress.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would happen to each file; send nothing.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="I/N|auto[/N]",
            help="Take only shard I of N (stable by path; for CI matrices); auto reads the CI's own "
            "parallelism (GitLab, CircleCI, Buildkite; a Kubernetes Indexed Job with auto/N).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="Give up waiting for a job after this long (rerun to resume).",
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into directory arguments.")
    ] = False,
    state_file: Annotated[
        Path | None,
        typer.Option(
            "--state-file",
            metavar="FILE",
            help="Resume cache to use (e.g. one kept by CI) [default: state.json in the state dir].",
        ),
    ] = None,
    report_file: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE",
            help="Write the results as JSON, CSV or JUnit XML, chosen by the extension (.json .csv .xml).",
        ),
    ] = None,
    summary_file: Annotated[
        Path | None,
        typer.Option(
            "--summary",
            metavar="FILE",
            help="Write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when that is set).",
        ),
    ] = None,
) -> None:
    """Encode files end to end: upload, encode, download. Re-running resumes and never duplicates work."""
    from sophon_cli import encode as pl
    from sophon_cli.cli.errors import classify
    from sophon_cli.cli.shared import build_metadata, check_height, check_state_file, check_timeout
    from sophon_cli.client.errors import InputError, SophonError
    from sophon_cli.encode import quality_gate
    from sophon_cli.exitcodes import ExitCode
    from sophon_cli.state import StateStore

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    _INTERRUPTED_LINE.said = False  # one line per run (also when called twice in one process)

    check_state_file(state_file)  # before anything is created (its lock beside it)
    if concurrency < 1 or part_concurrency < 1:
        raise InputError("--concurrency and --part-concurrency must be at least 1", hint="e.g. -j 2")
    meta = build_metadata(metadata, None) or {}
    options = pl.EncodeOptions(
        profile=profile,
        container=container,
        audio=audio,
        height=check_height(height),
        webhook_ids=tuple(webhook or ()),
        metadata=tuple(meta.items()),
        output_dir=output_dir,
        name_template=name_template,
        concurrency=concurrency,
        part_concurrency=part_concurrency,
        fallback=fallback,
        force=force,
        timeout=check_timeout(timeout),
        min_vmaf=min_vmaf,
        check_quality=check_quality,
    )
    shard_spec, shard_source = _shard(shard)
    outputs = _ReportTargets.check(report_file, summary_file)

    skipped_dirs: list[str] = []
    sources, ignored = pl.expand_inputs(patterns, recursive=recursive, skipped_dirs=skipped_dirs)
    for name in skipped_dirs:
        _report_ignored(out, name, "a directory (pass --recursive to encode the videos inside it)")
    for name in ignored:
        _report_ignored(out, name, "not a video file")
    options = _output_file(options, output_dir, container, len(sources))
    sources, excluded = pl.drop_own_outputs(sources, options)
    if out.json:
        for name, why in excluded:
            out.emit({"event": "ignored", "file": name, "reason": why})
    elif excluded:
        out.notice(
            f"left out {len(excluded)} file(s) that are outputs of other inputs (e.g. {excluded[0][0]})"
        )
    if shard_spec is not None:
        total = len(sources)
        sources = pl.select_shard(sources, *shard_spec)
        out.debug(f"shard {shard_spec[0]}/{shard_spec[1]}: {len(sources)} of {plural(total, 'file')}")
    if not sources:
        if shard_spec is not None:
            out.notice(f"shard {shard_spec[0]}/{shard_spec[1]} has no files; nothing to do")
            if out.json:
                empty = {"event": "summary", "dry_run": True, "files": 0, "actions": {}}
                out.emit(empty if dry_run else _view.summary_obj([], interrupted=False, exit_code=0))
            if not dry_run:
                outputs.write([], _run_info(shard_spec, shard_source, exit_code=0))
            return
        raise InputError("none of the inputs is a video file", hint="pass video files, directories or globs")

    store = StateStore(state_file or app_ctx.state_path, on_warning=out.warn)
    server_id = "local" if app_ctx.is_local else app_ctx.settings.base_url.rstrip("/")

    if dry_run:
        planner = pl.Pipeline(None, store, options, server_id=server_id)
        plan = planner.plan(sources)
        if out.json:
            for p in plan:
                out.emit(
                    {
                        "event": "plan",
                        "file": p.file,
                        "action": p.action,
                        "output": p.output,
                        "note": p.reason,
                    }
                )
            out.emit(
                {
                    "event": "summary",
                    "dry_run": True,
                    "files": len(plan),
                    "actions": _view.count(p.action for p in plan),
                }
            )
        else:
            out.table(
                ["file", "action", "output", "note"],
                [(p.file, p.action, _rel(p.output), p.reason or "") for p in plan],
                title="dry run: nothing was sent",
            )
        return

    if quality_gate.requested(options):
        quality_gate.check_available()  # before anything is uploaded
    client = app_ctx.client()
    renderer = _view.Renderer(out, sources)
    pipe = pl.Pipeline(
        client, store, options, on_event=renderer.event, on_progress=renderer.progress, server_id=server_id
    )
    renderer.on_reader_gone = pipe.stop  # a reader that went away stops the run, as Ctrl-C does
    started = time.monotonic()
    stopped_by: BaseException | None = None
    try:
        with renderer:
            report = pipe.run(sources)
    except (pl.HardInterrupt, KeyboardInterrupt):
        # A second Ctrl-C (or one while the run winds down): stop at once. Every finished step is
        # already in the cache; an output caught while scoring stays where it is, unscored.
        _hard_exit(_interrupted_line(force, pipe))
    except SophonError as exc:
        # An error every other file would hit too (server lost, key rejected, options refused):
        # the files that finished before it are summed up like after a Ctrl-C, then the error.
        if pipe.report is None:
            raise
        report, stopped_by = pipe.report, exc
    # Stopped because the reader of stdout went away (``| head -1``): the documented rule for a
    # reader that stops early, exit 0 (files that failed before still make it 7), the cache and the
    # outputs as after a Ctrl-C, one notice on stderr saying what is not finished.
    gone = renderer.stdout_closed or renderer.stderr_closed
    reader_gone = report.interrupted and not report.ctrl_c and gone
    ctrl_c = report.interrupted and not reader_gone
    if ctrl_c:  # from now on another Ctrl-C ends the process at once, saying the same
        _exit_on_next_ctrl_c(_interrupted_line(force, pipe))
    # Fold the journal into state.json so the one file holds everything (e.g. for a CI cache);
    # optional: the journal alone is a complete cache (the store warns when it cannot).
    store.compact(optional=True)

    results = report.results
    if stopped_by is not None:
        code = ExitCode(classify(stopped_by)[0])
    elif ctrl_c:
        code = ExitCode.INTERRUPTED
    elif report.failed:
        code = ExitCode.TIMEOUT if all(r.timed_out for r in report.failed) else ExitCode.PARTIAL
    else:
        code = ExitCode.OK
    try:
        if out.json and not renderer.stdout_closed:
            out.emit(
                _view.summary_obj(
                    results, interrupted=report.interrupted, exit_code=int(code), unscored=report.unscored
                )
            )
        elif results and not out.json:  # nothing finished: no empty table, the line below says it
            _view.summary_table(out, results)
    except PipeClosed:  # the reader took what it wanted; the reports and the exit code still follow
        renderer.stdout_closed = True
    if renderer.stdout_closed:
        _to_devnull(sys.stdout)
    if renderer.stderr_closed:  # the notices and warnings below have no reader either
        _to_devnull(sys.stderr)
    info = _run_info(
        shard_spec,
        shard_source,
        exit_code=int(code),
        interrupted=report.interrupted,
        duration=time.monotonic() - started,
    )
    outputs.write(results, info)
    for r in results:  # every output says how it was checked; one line for each that is unverified
        if r.output and r.verified is False:
            out.warn(f"{_rel(r.output)} is not verified against a sha256: {r.verification}")
    if (shown := report.display_error) is not None:  # a renderer bug is no file's failure
        from sophon_cli.cli.errors import debug_enabled

        if debug_enabled():  # the details the line below promises
            import traceback

            traceback.print_exception(type(shown), shown, shown.__traceback__, file=sys.stderr)
        out.warn(
            f"the progress display failed ({type(shown).__name__}: {shown}); the files are not affected;"
            " run again with SOPHON_DEBUG=1 for details and report it"
        )
    if stopped_by is not None:
        if report.unfinished:
            out.notice(
                f"{report.unfinished} of {plural(len(sources), 'file')} not finished; {_resume_words(force)}"
            )
        raise stopped_by  # the error boundary prints it (one line, its exit code)
    if ctrl_c:
        # one line, worded here: what was kept unscored, and (after --force) to drop it to resume
        _INTERRUPTED_LINE.say(_interrupted_line(force, pipe), redrawn=renderer.live)
        raise SystemExit(int(code))
    if reader_gone:
        out.notice(_interrupted_line(force, pipe, why=READER_GONE, total=len(sources)))
    if report.failed:
        from sophon_cli.cli.hints import NEXT_STEPS

        # the next step of failures the library marked with one (worded in cli/hints.py)
        steps_seen = _view.count(r.next_step for r in report.failed if r.next_step in NEXT_STEPS)
        for step, n in steps_seen.items():
            what = {
                "overwrite": "a file this run did not write is at the output path",
                "fresh_job": "the recorded job cannot be used",
                "fresh_link": "the download link was refused",
            }.get(step, "failed")
            out.notice(f"{plural(n, 'file')}: {what}; {_ENCODE_STEPS.get(step, NEXT_STEPS[step])}")
        out.notice(
            f"{len(report.failed)} of {plural(len(results), 'file')} failed; fix the cause and run the same command again"
        )
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


def _resume_words(force: bool) -> str:
    """How to resume an unfinished run: the same command, but never --force again (that would
    start every file over and orphan the jobs this run made)."""
    from sophon_cli.cli.hints import RESUME

    if force:
        return "run the same command again without --force to resume"
    return RESUME


#: a next step worded for encode where the shared words name another command: the same encode
#: again reuses the finished job and asks the API for its output, which gives a fresh link
_ENCODE_STEPS = {"fresh_link": "run the same command again: it asks for a fresh link"}

#: why a run stopped early when stdout's reader went away (instead of "interrupted")
READER_GONE = "stopped: standard output was closed by its reader"


def _interrupted_line(force: bool, pipe: Any, *, why: str = "interrupted", total: int | None = None) -> str:
    """The one line after a Ctrl-C (or another early stop: ``why``). Outputs caught while being
    scored are named: they are downloaded (and verified), kept in place, not scored yet; the rerun
    scores them without downloading them again (and finishes the other files). With ``total`` the
    line counts the files not finished."""
    unscored = pipe.unscored()
    if not unscored:
        if total is not None:
            return (
                f"{why}; {pipe.unfinished()} of {plural(total, 'file')} not finished; {_resume_words(force)}"
            )
        return f"{why}; {_resume_words(force)}"
    one = len(unscored) == 1
    names = ", ".join(_rel(u.output) for u in unscored[:3])
    if len(unscored) > 3:
        names += f" and {len(unscored) - 3} more"
    verified = " and verified" if all(u.verified for u in unscored) else ""
    kept = f"{names} {'is' if one else 'are'} downloaded{verified} but not scored yet (kept in place)"
    again = "run the same command again" + (" without --force" if force else "")
    rest = pipe.unfinished() - len(unscored)
    others = f" and to finish the other {plural(rest, 'file')}" if rest > 0 else ""
    return f"{why}; {kept}; {again} to score {'it' if one else 'them'} without downloading again{others}"


class _OneLine:
    """The interrupted line, written once (a Ctrl-C handler and the normal end may both try)."""

    def __init__(self) -> None:
        self.said = False

    def say(self, line: str, *, redrawn: bool = False) -> None:
        """``redrawn``: the live view was drawn over the echoed "^C" since (else a fresh line)."""
        if not self.said:
            self.said = True
            from sophon_cli.cli.output import interrupt_line

            interrupt_line(line, redrawn=redrawn)


_INTERRUPTED_LINE = _OneLine()


def _to_devnull(stream: Any) -> None:
    """``stream``'s reader is gone: point its descriptor at /dev/null, so that nothing written or
    flushed later (the interpreter's last flush) fails again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _hard_exit(line: str) -> None:
    """Stop at once with 130 after saying ``line`` (the cache is current after every step)."""
    from sophon_cli.exitcodes import ExitCode

    try:
        _INTERRUPTED_LINE.say(line)
        sys.stdout.flush()
    except Exception:  # pragma: no cover - a closed stream must not keep the process alive
        pass
    finally:
        os._exit(int(ExitCode.INTERRUPTED))


def _output_file(options: Any, output: Path | None, container: str | None, count: int) -> Any:
    """``-o result.mp4``: an output that names a video file (not an existing directory) is that
    file for a single input; with several inputs it is refused, never made into a directory."""
    import dataclasses

    from sophon_cli import encode as pl
    from sophon_cli.client.errors import InputError
    from sophon_cli.encode.naming import CONTAINERS

    if output is None or output.is_dir() or output.suffix.lower() not in pl.VIDEO_EXTENSIONS:
        return options
    ext = output.suffix.lower().lstrip(".")
    if count != 1:
        raise InputError(
            f"-o {output} names a file, but {count} videos were given",
            hint="pass a directory to -o for several inputs (its name must not end in a video extension)",
        )
    if ext not in CONTAINERS:
        raise InputError(
            f"-o {output}: outputs are MP4 or MKV, not {ext}",
            hint=f"name it {output.with_suffix('.mp4').name}, or pass a directory",
        )
    if container is not None and container != ext:
        raise InputError(
            f"-o {output} disagrees with --container {container}",
            hint=f"name it {output.with_suffix('.' + container).name}, or drop --container",
        )
    literal = output.name.replace("{", "{{").replace("}", "}}")
    return dataclasses.replace(options, output_dir=output.parent, name_template=literal, container=ext)


def _shard(spec: str | None) -> tuple[tuple[int, int] | None, str | None]:
    """``--shard``: I/N as given, or ``auto`` / ``auto/N`` from the CI's variables (sophon_cli.ci)."""
    from sophon_cli import ci

    found = ci.resolve_shard(spec)
    if found is None:
        return None, None
    return (found.index, found.count), (found.source if ci.is_auto(spec) else None)


def _run_info(
    shard_spec: tuple[int, int] | None,
    shard_source: str | None,
    *,
    exit_code: int,
    interrupted: bool = False,
    duration: float | None = None,
) -> Any:
    from sophon_cli import __version__, reports

    return reports.RunInfo(
        version=__version__,
        shard=f"{shard_spec[0]}/{shard_spec[1]}" if shard_spec else None,
        shard_source=shard_source,
        interrupted=interrupted,
        exit_code=exit_code,
        duration_seconds=None if duration is None else round(duration, 3),
    )


class _ReportTargets:
    """Where the run's results go: ``--report``, ``--summary`` and GitHub's step summary. Checked
    before any work starts, so a bad path fails in a second, not after the batch."""

    def __init__(self, report: Path | None, report_format: Any, summary: Path | None, step: str | None):
        self.report, self.report_format, self.summary, self.step = report, report_format, summary, step

    @classmethod
    def check(cls, report: Path | None, summary: Path | None) -> _ReportTargets:
        from sophon_cli import reports

        fmt = None
        if report is not None:
            with _from_option("--report"):
                fmt = reports.format_for(report)
                reports.check_target(report, fmt)
        if summary is not None:
            with _from_option("--summary"):
                reports.check_target(summary, reports.ReportFormat.MARKDOWN)
        return cls(report, fmt, summary, os.environ.get("GITHUB_STEP_SUMMARY") or None)

    def write(self, results: list[Any], info: Any) -> None:
        from sophon_cli import reports

        if self.report is not None:
            with _from_option("--report"):
                reports.write_report(
                    self.report, reports.render(self.report_format, results, info), self.report_format
                )
        if self.summary is None and self.step is None:
            return
        markdown = reports.render_markdown(results, info)
        if self.summary is not None:
            with _from_option("--summary"):
                reports.write_report(self.summary, markdown, reports.ReportFormat.MARKDOWN)
        if self.step is not None:
            with _from_option("GITHUB_STEP_SUMMARY"):
                reports.append_summary(self.step, markdown)


@contextlib.contextmanager
def _from_option(source: str) -> Iterator[None]:
    """A report path the library cannot write to is said naming ``source``, the option (or
    variable) the path came from."""
    from sophon_cli import reports
    from sophon_cli.cli.hints import report_target_words
    from sophon_cli.client.errors import InputError

    try:
        yield
    except reports.TargetError as exc:
        message, step = report_target_words(exc, source)
        raise InputError(message, hint=step) from None


def _exit_on_next_ctrl_c(line: str) -> None:
    """After the first Ctrl-C was handled, another one ends the process at once with 130,
    saying ``line`` (unless it was said already)."""
    import signal

    def handler(*_: Any) -> None:
        _hard_exit(line)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # pragma: no cover - not the main thread (embedded use)
        pass


# -- rendering ------------------------------------------------------------------------------------


def _report_ignored(out: Any, name: str, why: str) -> None:
    if out.json:
        out.emit({"event": "ignored", "file": name, "reason": why})
    else:
        out.warn(f"skipping {name}: {why}")


def _rel(path: str | None) -> str:
    if not path:
        return "-"
    try:
        return os.path.relpath(path)
    except ValueError:
        return path
