"""Start-up cost: `sophon --version/--help/job get` vs bare imports of the libraries they stand on.

    python benchmarks/startup.py [--quick] [--runs N]

Alternating runs (each a fresh process, wall time from fork to exit) of
  sophon --version            sophon --help            sophon job get <id>  (against a local server)
  python -c "import typer"    python -c "import typer, httpx, pydantic_settings"
  python -c "pass"            (the interpreter's own floor, for reference)

Ratios: help_over_typer = help / import typer, api_over_imports = job get / import typer+httpx+
pydantic_settings. Goals: <= 1.3 and <= 1.2.

Tab completion: completions/sophon.bash is static. The script sources it in a bash whose PATH is
empty, runs the completion function for `sophon jo<TAB>` and `sophon job <TAB>`, checks the answers,
and (when strace is installed) counts the execve() calls of the whole run: exactly one (bash itself)
means no Python process was started.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

COMPLETE = r"""
source "$1"
PATH=""
complete_line() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _sophon; echo "${COMPREPLY[*]}"; }
complete_line sophon jo
complete_line sophon job ""
complete_line sophon webhooks li
"""


def completion_script(tmp: Path) -> tuple[Path, str]:
    script = REPO / "completions" / "sophon.bash"
    if script.is_file():
        return script, "completions/sophon.bash"
    # an install without the source tree: the same static file, printed once by the CLI
    out = tmp / "sophon.bash"
    out.write_text(
        subprocess.run([b.sophon(), "completions", "bash"], capture_output=True, text=True, check=True).stdout
    )
    return out, "`sophon completions bash` (static file)"


def check_completion(tmp: Path) -> dict:
    script, origin = completion_script(tmp)
    bash = shutil.which("bash")
    if bash is None:
        return {"completion": "bash not installed"}
    run = b.timed([bash, "--norc", "--noprofile", "-c", COMPLETE, "bash", str(script)], env={"PATH": ""})
    lines = run.stdout.splitlines()
    ok = (
        run.rc == 0
        and len(lines) == 3
        and lines[0].split() == ["job"]
        and {"create", "get", "list", "cancel", "wait"} <= set(lines[1].split())
        and lines[2].split() == ["list", "listen"]
    )
    result = {
        "completion_ok": ok,
        "completion_answers": lines,
        "completion_ms": round(run.wall * 1000, 1),
        "completion_source": origin,
    }
    strace = shutil.which("strace")
    if strace:
        log = tmp / "strace.log"
        subprocess.run(
            [
                strace,
                "-f",
                "-qq",
                "-e",
                "trace=execve,execveat",
                "-o",
                str(log),
                bash,
                "--norc",
                "--noprofile",
                "-c",
                COMPLETE,
                "bash",
                str(script),
            ],
            env={"PATH": ""},
            capture_output=True,
            check=False,
        )
        execs = [ln for ln in log.read_text().splitlines() if "execve" in ln and "= 0" in ln]
        result["completion_execs"] = len(execs)
        result["completion_exec_list"] = [ln.split("(", 1)[1].split(",", 1)[0] for ln in execs]
    return result


def main() -> None:
    p = b.base_parser(__doc__.splitlines()[0])
    args = p.parse_args()
    runs = args.runs or (5 if args.quick else 20)
    py = sys.executable

    with b.Workdir(args, "startup") as tmp:
        clip = b.make_clip(tmp / "clip.mp4")
        with b.BenchServer(tmp / "server") as srv:
            job = srv.create_job(srv.upload(clip))
            srv.wait_job(job["id"])
            env = srv.cli_env(tmp / "home")
            sophon = b.sophon()

            def side(cmd: list[str], what: str):
                return lambda: b.timed(cmd, env=env).check(what)

            sides = [
                ("version", side([sophon, "--version"], "sophon --version")),
                ("help", side([sophon, "--help"], "sophon --help")),
                ("job_get", side([sophon, "job", "get", job["id"]], "sophon job get")),
                ("typer", side([py, "-c", "import typer"], "import typer")),
                ("imports", side([py, "-c", "import typer, httpx, pydantic_settings"], "imports")),
                ("python", side([py, "-c", "pass"], "python -c pass")),
            ]
            results = b.alternate(sides, runs, warmup=1)
        completion = check_completion(tmp)

    med = {k: b.median(r.wall for r in v) for k, v in results.items()}
    cpu = {k: b.median(r.user + r.sys for r in v) for k, v in results.items()}
    rss = {k: max(r.rss_mib for r in v) for k, v in results.items()}
    labels = {
        "version": "sophon --version",
        "help": "sophon --help",
        "job_get": "sophon job get <id> (local server)",
        "typer": 'python -c "import typer"',
        "imports": 'python -c "import typer, httpx, pydantic_settings"',
        "python": 'python -c "pass"',
    }
    t = b.Table(
        f"start-up, {runs} alternating runs per command (medians)",
        ["command", "wall ms", "min ms", "cpu ms", "peak RSS MiB"],
    )
    for k, label in labels.items():
        t.add(label, med[k] * 1000, min(r.wall for r in results[k]) * 1000, cpu[k] * 1000, rss[k])
    figures = {
        "benchmark": "startup",
        "runs": runs,
        "version_ms": round(med["version"] * 1000, 1),
        "help_ms": round(med["help"] * 1000, 1),
        "job_get_ms": round(med["job_get"] * 1000, 1),
        "import_typer_ms": round(med["typer"] * 1000, 1),
        "import_api_stack_ms": round(med["imports"] * 1000, 1),
        "python_ms": round(med["python"] * 1000, 1),
        "help_over_typer": b.ratio(med["help"], med["typer"]),
        "version_over_typer": b.ratio(med["version"], med["typer"]),
        "api_over_imports": b.ratio(med["job_get"], med["imports"]),
        # CPU time (user+sys) is less sensitive to other load on a shared machine than wall time
        "help_over_typer_cpu": b.ratio(cpu["help"], cpu["typer"]),
        "api_over_imports_cpu": b.ratio(cpu["job_get"], cpu["imports"]),
        **{k: v for k, v in completion.items() if k != "completion_exec_list"},
    }
    notes = [
        b.goal_line("help_over_typer", figures["help_over_typer"], 1.3),
        b.goal_line("api_over_imports", figures["api_over_imports"], 1.2),
        f"tab completion ({completion.get('completion_source')}, PATH emptied): answers {completion.get('completion_answers')}"
        f" in {completion.get('completion_ms')} ms; "
        + (
            f"execve calls under strace: {completion['completion_execs']} {completion['completion_exec_list']}"
            " (1 = bash only: no Python process)"
            if "completion_execs" in completion
            else "strace not installed; PATH was empty, so no python could be started by name"
        ),
    ]
    b.finish(figures, [t], notes)


if __name__ == "__main__":
    main()
