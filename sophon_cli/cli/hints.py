"""The one table of next steps as a terminal user reads them (which command or flag to try).

The library raises structured errors (a class, ``status``/``code``/``path`` for API errors, a
:class:`~sophon_cli.client.errors.NextStep`; outside the client a :class:`~sophon_cli.next_steps.Step`
or the :class:`~sophon_cli.next_steps.Option` a bad value was given to) and words nothing in terms
of the command line; this module turns them into the words the CLI prints: the flags, the commands. ``cli/errors.py`` is its
only caller for errors; other commands may use :data:`RESUME` for their interrupted-run line.
"""

from __future__ import annotations

import re

from sophon_cli.cli import origins

#: what an interrupted command prints (one wording everywhere)
RESUME = "run the same command again to resume"
INTERRUPTED = f"interrupted; {RESUME}"
#: after a server refused an http:// webhook URL
INSECURE_WEBHOOK_URL = (
    "use an https URL; to receive on http:// while testing, run the local server with "
    "`sophon server --allow-insecure-webhooks` and pass `--base-url http://127.0.0.1:8765`"
)

#: after a local path whose file name is longer than its file system allows (ENAMETOOLONG)
NAME_TOO_LONG = "the file name is too long for this file system; choose a shorter name"

#: NextStep value -> the words (``{job_id}`` filled from the error when it names one)
NEXT_STEPS: dict[str, str] = {
    "overwrite": "use --force to overwrite it",
    "new_session": "upload again with --new",
    "fresh_job": "run again with --force for a fresh job",
    "wait_for_job": "wait for the job to finish (`sophon job wait <id>`), then download",
    "wait_again": "wait again with `sophon job wait <id>` or raise --timeout",
    "resume": RESUME,
    "set_key": "check SOPHON_API_KEY or run `sophon config set-key`",
    "check_connection": "check your network and the base URL ({base_url_origin}), or use --local for the local "
    "server",
    "check_host_name": "check the host name in the base URL ({base_url_origin}), or use --local for the "
    "local server",
    "check_dns": "check your network connection and DNS, then the host name in the base URL "
    "({base_url_origin})",
    "check_certificate": "check the host name in the base URL ({base_url_origin}); if the server's "
    "certificate comes from a private CA, point SSL_CERT_FILE at that CA's certificate",
    "check_scheme": "the server there does not speak TLS: check the scheme and port of the base URL "
    "({base_url_origin}); the local server uses http://",
    "start_server": "start the local server (`sophon server{port}`) or use --local, which starts one; "
    "or fix the base URL ({base_url_origin})",
    "raise_timeout": "check your network, or allow more time with SOPHON_TIMEOUT (seconds, now {timeout}; "
    "`sophon config set timeout N` keeps it)",
    "connection_dropped": "try again later; if it keeps happening, check that the base URL "
    "({base_url_origin}) points at the SOPHON API",
    "check_proxy": "check {proxy_variable} (the proxy this environment sends requests through), or add the "
    "server's host to NO_PROXY",
    "fresh_link": "get a fresh link: run `sophon download <id>` again (`sophon job get <id>` shows the job)",
}

#: a download origin (not the base URL's host) whose name did not resolve
OTHER_HOST_NAME = "check your network connection and DNS, then run the download again for a fresh link"
#: a download origin (not the base URL's host) whose TLS certificate did not verify
OTHER_HOST_TLS = (
    "that is the download host, not the base URL's: if this network inspects TLS, point SSL_CERT_FILE "
    "at its CA certificate; otherwise report it"
)


# -- the API key: missing or rejected, said with where it came from (never the key) --------------


def _set_key_command() -> str:
    profile = origins.profile()
    return (
        "`sophon config set-key`" if profile == "default" else f"`sophon config set-key --profile {profile}`"
    )


def key_message(exc: BaseException) -> tuple[str, str] | None:
    """(message, next step) for a missing or rejected API key, in the CLI's terms: which setting the
    key came from (or that none is set) and how to set it. None for other errors."""
    from sophon_cli.client import errors as e

    kind, where = origins.key_origin()
    if isinstance(exc, (e.NoKeyError, e.KeyMissingError)):
        if kind == "env":  # set, but empty: it hides any key stored in the profile
            return (
                f"no API key: {where} is set but empty",
                f"set it to your API key, or unset it to use the key stored with {_set_key_command()}",
            )
        from sophon_cli.settings import config_path

        told = " (the server answered 401)" if isinstance(exc, e.KeyMissingError) else ""
        return (
            f"no API key is set for profile {origins.profile()!r}: SOPHON_API_KEY is not set and "
            f"{config_path()} has none for it{told}",
            f"store one with {_set_key_command()} (or set SOPHON_API_KEY), or use --local for the local "
            "server",
        )
    if isinstance(exc, e.KeyRejectedError):
        status = f"{exc.status} {exc.code}".strip()
        if kind == "env":
            return (
                f"{origins.server_words()} rejected the API key from {where} ({status})",
                f"set {where} to a valid key for this server, or unset it to use the key stored with "
                f"{_set_key_command()}",
            )
        if kind == "file":
            return (
                f"{origins.server_words()} rejected the API key of {where} ({status})",
                f"store a valid key for this server with {_set_key_command()}",
            )
        if kind == "local":
            return (
                f"the local server rejected the key from {where} ({status})",
                "stop it with `sophon server stop` and run the command again",
            )
        return (
            f"{origins.server_words()} rejected the API key ({status})",
            NEXT_STEPS["set_key"],
        )
    return None


def _step_fields(exc: BaseException) -> dict[str, str]:
    """What a next step's words may name: where the base URL came from, the URL's port (as a
    ``--port`` option, empty for the local server's default), the request timeout."""
    from urllib.parse import urlsplit

    proxy = getattr(exc, "proxy", None)
    fields = {
        "base_url_origin": origins.base_url_origin(),
        "port": "",
        "timeout": "?",
        "proxy_variable": getattr(proxy, "variable", "the proxy setting"),
    }
    url = getattr(exc, "url", None)
    try:
        port = urlsplit(url).port if isinstance(url, str) else None
    except ValueError:
        port = None
    if port is not None and port != 8765:
        fields["port"] = f" --port {port}"
    timeout = origins.timeout()
    if timeout is not None:
        fields["timeout"] = f"{timeout:g}"
    return fields


#: `sophon server` refusals and `server stop` outcomes -> words (``{url}``, ``{data_dir}``: the
#: ` --data-dir DIR` option, empty for the default dir, ``{pid}`` filled by the command)
SERVER_STEPS: dict[str, str] = {
    "port_in_use": "pick another port with --port (0 picks a free one)",
    "port_in_use_by_server": "a server already answers there (`sophon server status` shows the one on "
    "your data dir); use it, or pick another port with --port (0 picks a free one)",
    "cannot_listen": "pick another --host or --port",
    "data_dir_in_use_at": "it answers at {url}: use it (--local, or --base-url {url}), or stop it with "
    "`sophon server stop{data_dir}`, or pick another --data-dir",
    "data_dir_in_use": "stop it with `sophon server stop{data_dir}`, or pick another --data-dir",
    "stop_timeout": "it may still be finishing requests; run `sophon server stop` again, or end it with "
    "`kill {pid}`",
    "stop_unknown_pid": "it runs inside another program (or is still starting); stop it there",
    # said once when `sophon server` is listening: how another shell uses it (never the key)
    "connect_local": "from another shell: `{env}sophon --local job list` (--local on any command uses "
    "this server and its key)",
    "connect_key_file": "from another shell: `export SOPHON_BASE_URL={url} "
    'SOPHON_API_KEY="$(cat {key_file})"`, then e.g. `sophon job list`',
    "connect_given_keys": "from another shell: `export SOPHON_BASE_URL={url}` and set SOPHON_API_KEY to one "
    "of the keys this server was given ({given}), then e.g. `sophon job list`",
}

#: a directory of sophon's own (SOPHON_HOME, or the config, state or data dir) it cannot use, by cause
OWN_DIR_STEPS: dict[str, str] = {
    "permissions": "fix the permissions of {where} (you must be able to write there), or set SOPHON_HOME "
    "to a directory you can write",
    "read_only": "it is on a read-only file system: set SOPHON_HOME to a directory you can write",
    "not_a_directory": "{obstacle} is a file, not a directory: move it away, or set SOPHON_HOME to a "
    "directory you can write",
    "full": "free some disk space there, or set SOPHON_HOME to a directory on another disk",
    "other": "check that it is a directory you can write, or set SOPHON_HOME to one",
}

#: a path given to --report/--summary (or by GITHUB_STEP_SUMMARY) that cannot take what was to be
#: written there: ``reports.TargetProblem`` value -> (message, next step). ``{source}`` is the option
#: (or variable) the path came from, ``{path}`` the path, ``{kind}`` "report" or "summary",
#: ``{example}`` a file name inside a directory, ``{detail}`` the system's words
REPORT_TARGET: dict[str, tuple[str, str]] = {
    "unknown_format": (
        "{source} {path}: cannot tell the report format",
        "name it *.json, *.csv or *.xml (JUnit)",
    ),
    "symlink": ("{source} {path} is a symlink; a {kind} is never written through one", "pick another path"),
    "directory": ("{source} {path} is a directory", "give it a file name (e.g. {example})"),
    "not_ours": (
        "{source} {path} exists and is not an earlier sophon {kind}; it was left alone",
        "pick another path, or move that file away",
    ),
    "cannot_open": (
        "{source} {path}: cannot append the {kind}: {detail}",
        "check the path (symlinks are not followed)",
    ),
}


def report_target_words(exc: BaseException, source: str) -> tuple[str, str]:
    """(message, next step) for a ``reports.TargetError`` whose path came from ``source`` (the
    option, e.g. ``--summary``, or the variable that set it)."""
    import os

    problem = getattr(exc, "problem", None)
    path = str(getattr(exc, "path", ""))
    kind = getattr(exc, "kind", "report")
    example = os.path.join(path, "summary.md" if kind == "summary" else "report.json")
    message, step = REPORT_TARGET[getattr(problem, "value", "not_ours")]
    fields = {
        "source": source,
        "path": path,
        "kind": kind,
        "example": example,
        "detail": getattr(exc, "detail", ""),
    }
    return message.format_map(fields), step.format_map(fields)


#: API error code -> words
API_CODES: dict[str, str] = {
    "output_not_ready": "wait for the job to finish (`sophon job wait <id>`), then download",
    "job_not_cancelable": "the job already finished; see it with `sophon job get <id>`",
    "conflict": "an earlier request used the same idempotency key with different data; rerun with --new",
    "quota_exceeded": "your plan's quota is used up; wait for it to reset or upgrade the plan",
    "capacity_exceeded": "the server is short of disk space; try again later",
    "source_invalid": "check that the file is a playable video (try opening it in a player)",
    "source_unsupported": "convert the source to a common format (e.g. H.264 MP4) and retry",
    "validation_error": "check the options you passed (see `--help`)",
    "rate_limited": "the server limits how fast requests may come: wait a minute, then run the command "
    "again (with a lower --concurrency for upload or encode)",
    "output_persistence_failed": "the server could not store the output; submit the job again",
    "invalid_response": "check SOPHON_BASE_URL points at a SOPHON API server",
}


#: the server's words for a job whose upload is not (or no longer) usable
_UPLOAD_NOT_COMPLETED = re.compile(
    r"\bupload \S+ is (canceled|expired|uploading|assembling|\w+), not completed"
)
UPLOAD_NOT_COMPLETED = (
    "the upload is {status}, so there is nothing to encode; upload the file again (`sophon upload FILE`) "
    "and use the new upload id"
)


#: after a reply that is not the API's error envelope (``{origin}``: where the base URL came from)
NOT_THE_API = {
    "server": "the reply did not come from the SOPHON API itself (a proxy or gateway in front of it?); "
    "try again later, and if it persists check the base URL ({origin})",
    "client": "the reply is not a SOPHON API error: check that the base URL ({origin}) points at the "
    "SOPHON API",
}
#: after a 413 (the API sets no body limit of its own: a proxy in front of it does)
TOO_LARGE = (
    "the server or a proxy in front of it refused a request this large; if you run that proxy, raise its "
    "request body limit, otherwise report it"
)


def not_the_api(exc: BaseException) -> bool:
    """An API request answered with a body that is not the API's error envelope (an HTML page, an
    empty body): a proxy, a gateway or a wrong base URL answered, not the API. Download origins
    (signed links) are not the API and may answer in their own format; 401, 413 and 429 mean the
    same whoever sends them."""
    from sophon_cli.client import errors as e

    return (
        isinstance(exc, e.APIError)
        and not isinstance(exc, e.MalformedResponseError)
        and not exc.enveloped
        and exc.status not in (401, 413, 429)
        and "/downloads/" not in exc.path
    )


def api_hint(status: int, code: str, path: str, *, request_id: bool = True) -> str:
    """The next step for an API error response (``request_id``: whether the error carries one)."""
    if code in API_CODES:
        return API_CODES[code]
    if status == 401:
        return NEXT_STEPS["set_key"]
    if status == 403:
        if "/downloads/" in path:
            return "the download link expired or is invalid; run the download again for a fresh link"
        kind, where = origins.key_origin()
        source = f" from {where}" if kind in ("env", "file") else ""
        return f"the API key{source} is not allowed to do this; use a key with the needed permission"
    if status == 413:
        return TOO_LARGE
    if status == 404:
        if path.startswith("/v1/webhooks"):
            return "check the id (`sophon webhooks list`)"
        if path.startswith("/v1/uploads"):
            return "the upload session is gone or expired; upload the file again"
        if "/downloads/" in path:
            return "the output file is gone; run the download again"
        return "check the id (`sophon job list`)"
    if status == 409:
        return "the resource is in the wrong state for this; check it with `sophon job get <id>`"
    if status == 429:
        return API_CODES["rate_limited"]
    if status >= 500:
        if request_id:
            return "the server failed; try again later and quote the request id if it persists"
        return "the server failed; try again later, and report it if it persists"
    return "check the request (see `--help`)"


#: an option of the library (``sophon_cli.next_steps.Option`` value) -> its flag
OPTION_FLAGS: dict[str, str] = {
    "recursive": "--recursive",
    "output_dir": "-o",
    "name_template": "--name-template",
    "min_vmaf": "--min-vmaf",
    "fallback": "--fallback",
    "container": "--container",
    "concurrency": "--concurrency",
    "state_file": "--state-file",
    "data_dir": "--data-dir",
}
#: an option's value hints that are better said with its flag (others keep the library's words)
OPTION_HINTS: dict[str, str] = {
    "concurrency": "pass e.g. --concurrency 2",
}

#: ``sophon_cli.next_steps.Step`` value -> the words (filled from the error's attributes, so a
#: literal brace is doubled)
STEPS: dict[str, str] = {
    "recurse": "pass --recursive to encode the videos inside it",
    "check_pattern": "check the pattern (quote it so the shell does not expand it; ** needs no --recursive)",
    "other_output_name": "pick another --name-template or -o directory",
    "keep_layout": "use -o with the directory layout kept, or a --name-template with {{name}}",
    "state_busy": "another sophon process is holding it; wait for it or pass --state-file",
    "state_unwritable": "check free space and permissions, or pass --state-file",
    "server_log": "see {log}, or run `sophon server --data-dir {data_dir}` to see why",
}


def message_for(exc: BaseException) -> str:
    """``exc``'s message as the CLI says it: an option the library names is given as its flag."""
    from sophon_cli.next_steps import OptionError

    if isinstance(exc, OptionError):
        return f"{exc.before}{OPTION_FLAGS.get(exc.option.value, exc.option.value)}{exc.after}"
    key = key_message(exc)
    if key is not None:  # the server's 401 text is about headers the user never sends
        return key[0]
    from sophon_cli.client import errors as e

    if isinstance(exc, e.LinkRefusedError):  # the server's words are about its API, not this link
        code = "" if exc.code == f"http_{exc.status}" else f" {exc.code}"
        return f"the download link was refused ({exc.status}{code}): expired or invalid token"
    if isinstance(exc, e.APIError) and not isinstance(exc, e.MalformedResponseError):
        code = "" if exc.code == f"http_{exc.status}" else f" {exc.code}"  # no envelope: no code
        tries = f", after {exc.attempts} attempts" if exc.attempts > 1 else ""
        return f"{exc.message} ({exc.status}{code}{tries})"
    return str(exc)


def hint_for(exc: BaseException) -> str | None:
    """The words of the next step after ``exc``'s message (None when there is nothing to add), with
    ``<id>`` in them replaced by the job(s) the error is about when it says which."""
    words = _hint_words(exc)
    ids = _job_ids(exc)
    return words.replace("<id>", " ".join(ids)) if words and ids else words


_JOB_PATH = re.compile(r"^/v1/jobs/([^/?#]+)")


def _job_ids(exc: BaseException) -> list[str]:
    """The job ids an error is about: a wait's pending jobs, the job it carries, the job in the
    request path; [] when it names none."""
    ids = [str(i) for i in getattr(exc, "job_ids", None) or []]
    job_id = getattr(getattr(exc, "job", None), "id", None) or getattr(exc, "job_id", None)
    if not ids and job_id:
        ids = [str(job_id)]
    path = getattr(exc, "path", None)  # an API error's request path (other errors: a local Path)
    found = _JOB_PATH.match(path) if isinstance(path, str) else None
    if not ids and found:
        from urllib.parse import unquote

        ids = [unquote(found.group(1))]
    return [i for i in ids if re.fullmatch(r"[A-Za-z0-9_-]{1,128}", i)]


def _hint_words(exc: BaseException) -> str | None:
    """The words of the next step after ``exc``'s message (None when there is nothing to add).

    Order: the error's Step (errors outside the client) or option; the error's NextStep; for an error the server answered, its code/status/path; the
    library's own (flag-free) hint; a default for the error's class.
    """
    from sophon_cli.client import errors as e
    from sophon_cli.next_steps import OptionError, Step

    local_step = getattr(exc, "step", None)
    if isinstance(local_step, Step) and local_step.value in STEPS:
        return STEPS[local_step.value].format_map(vars(exc))
    if isinstance(exc, OptionError) and exc.option.value in OPTION_HINTS:
        return OPTION_HINTS[exc.option.value]
    key = key_message(exc)
    if key is not None:
        return key[1]
    step = getattr(exc, "next_step", None)
    if isinstance(exc, e.NameResolutionError) and exc.url is None:
        return OTHER_HOST_NAME
    if isinstance(exc, e.TLSError) and exc.url is None:
        return OTHER_HOST_TLS
    if step is not None:
        words = NEXT_STEPS.get(getattr(step, "value", str(step)))
        if words and "{" in words:
            if step == e.NextStep.CHECK_HOST_NAME and origins.default_base_url():
                words = NEXT_STEPS["check_dns"]  # the service's own name: the network is the suspect
            return words.format_map(_step_fields(exc))
        if words:
            return words
    if isinstance(exc, e.MalformedResponseError):
        return API_CODES["invalid_response"]
    if isinstance(exc, e.APIError) and exc.code == "source_invalid":
        gone = _UPLOAD_NOT_COMPLETED.search(exc.message)
        if gone:  # the upload, not the video, is the problem
            return UPLOAD_NOT_COMPLETED.format(status=gone.group(1))
    if not_the_api(exc):
        words = NOT_THE_API["server" if exc.status >= 500 else "client"]
        return words.format(origin=origins.base_url_origin())
    if isinstance(exc, e.APIError) and exc.hint is None:
        return api_hint(exc.status, exc.code, exc.path, request_id=bool(exc.request_id))
    hint = getattr(exc, "hint", None)
    if hint:
        return hint
    return _class_default(exc)


def _class_default(exc: BaseException) -> str | None:
    from sophon_cli.client import errors as e

    if isinstance(exc, e.AuthError):
        return NEXT_STEPS["set_key"]
    if isinstance(exc, e.NotFoundError):
        return "check the id"
    if isinstance(exc, e.TransportError):
        return "check the URL and your network, or use --local"
    if isinstance(exc, e.JobFailedError):
        job_id = getattr(getattr(exc, "job", None), "id", None)
        return f"see it with `sophon job get {job_id}`" if job_id else None
    if isinstance(exc, e.APIError) and exc.retryable:
        return "try again later"
    return None


#: `sophon doctor`: diagnose.Fix value -> the words after a warn/fail line
DOCTOR_FIXES: dict[str, str] = {
    "fix_config": "fix the file by hand or move it away (`sophon config path` prints it)",
    "missing_profile": "create it with `sophon config set base_url URL --profile NAME`, or name one that exists "
    "(--profile, SOPHON_PROFILE)",
    "fix_settings": "check the SOPHON_* variables and `sophon config show`",
    "set_key": "set SOPHON_API_KEY or run `sophon config set-key` (or use --local)",
    "check_key": "check SOPHON_API_KEY or run `sophon config set-key`",
    "check_url": "check your network and the base URL (`sophon config show`), or use --local",
    "not_ready": "the server is up but not ready; try again in a moment",
    "sync_clock": "sync this machine's clock (NTP, e.g. `timedatectl set-ntp true`)",
    "install_ffmpeg": "install the extras: pip install 'sophon-cli[server]'",
    "state_dir": "fix its permissions, or set SOPHON_HOME to a writable directory",
    "secrets_file": "fix the file by hand or move it away; `webhooks listen` and --save-secret need it",
}
