"""Start-up stays light: the entry module loads none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["httpx", "pydantic", "pydantic_settings", "rich", "starlette", "uvicorn", "av", "imageio_ffmpeg"]


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_entry_module_loads_no_heavy_library():
    assert _loaded_after("import sophon_cli.cli.main") == []


def test_importing_package_loads_no_heavy_library():
    assert _loaded_after("import sophon_cli") == []


def _run_main(*argvs: list[str]) -> str:
    return (
        "from sophon_cli.cli.main import main\n"
        "import contextlib, io\n"
        f"for argv in {list(argvs)!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (argv, e.code)\n"
    )


def test_root_help_and_version_load_no_heavy_library():
    assert _loaded_after(_run_main(["--help"], ["--version"])) == []


def test_subcommand_help_loads_no_http_or_rendering_library():
    # typer >= 0.22 validates parameters with pydantic, so parsing any subcommand loads pydantic
    # (typer's own dependency); httpx, rich and the server stack must still stay out.
    loaded = _loaded_after(_run_main(["job", "--help"], ["encode", "--help"], ["upload", "--help"]))
    assert [m for m in loaded if m not in ("pydantic",)] == []


def test_lazy_public_surface_still_works():
    code = "import sophon_cli\nassert sophon_cli.SophonError.__name__ == 'SophonError'"
    assert "httpx" not in _loaded_after(code)


def test_building_settings_and_client_runs_no_garbage_collection():
    """Importing pydantic-settings and httpx and building the client allocate ~90,000 long-lived
    objects; the cyclic GC is paused meanwhile (it ran ~130 times over them for nothing) and is
    enabled again after."""
    probe = (
        "import gc, json, os\n"
        "os.environ.update(SOPHON_BASE_URL='http://127.0.0.1:9', SOPHON_API_KEY='xt_live_k')\n"
        "from sophon_cli.cli.context import AppContext\n"
        "ctx = AppContext()\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: runs.append(info['generation']) if phase == 'start' else None)\n"
        "ctx.client()\n"
        "print(json.dumps({'runs': len(runs), 'enabled': gc.isenabled()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"runs": 0, "enabled": True}


def test_no_config_file_means_no_toml_parser_is_loaded(tmp_path):
    """Most runs have no config file: reading settings then never imports the TOML parser."""
    code = (
        "import os, sys\n"
        f"os.environ.update(SOPHON_HOME={str(tmp_path)!r}, SOPHON_BASE_URL='http://127.0.0.1:9')\n"
        "from sophon_cli.settings import load_settings\n"
        "assert load_settings().base_url == 'http://127.0.0.1:9'\n"
        "print('tomllib' in sys.modules or 'tomli' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_a_command_never_scans_installed_distributions_for_pydantic_plugins(tmp_path):
    """pydantic reads every installed distribution's entry points the first time it builds a
    validator, looking for plugins sophon never uses: a command that loads the settings and a reply
    model skips that scan and the import of importlib.metadata it needs (and leaves a value the
    user set alone: then pydantic's own loader runs)."""
    code = (
        "import os, sys\n"
        f"os.environ.update(SOPHON_HOME={str(tmp_path)!r})\n"
        "os.environ.pop('PYDANTIC_DISABLE_PLUGINS', None)\n"
        + _run_main(["config", "show"])
        + "from sophon_cli.client.models import Job\n"
        "assert Job.model_validate({'id': 'job_1', 'status': 'queued'}).id == 'job_1'\n"
        "import pydantic.plugin._loader as loader\n"
        "print('SCANNED' if vars(loader).get('_plugins') is not None else 'NOT-SCANNED',\n"
        "      'METADATA' if 'importlib.metadata' in sys.modules else 'NO-METADATA',\n"
        "      os.environ['PYDANTIC_DISABLE_PLUGINS'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # nor imports importlib.metadata (email, zipfile, csv, ...) for a scan that cannot find anything
    assert out.stdout.split()[-3:] == ["NOT-SCANNED", "NO-METADATA", "__all__"]
    kept = code.replace(
        "os.environ.pop('PYDANTIC_DISABLE_PLUGINS', None)",
        "os.environ['PYDANTIC_DISABLE_PLUGINS'] = 'logfire'",
    )
    out = subprocess.run([sys.executable, "-c", kept], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "logfire"


def test_an_upload_builds_no_jobs_or_webhooks_model(server, clip, tmp_path):
    """`sophon upload` parses only upload replies: the jobs and webhooks models (client/job_models.py)
    are not built on its way to the first part, and stay importable from client.models."""
    from tests.helpers.env import cli_env

    code = (
        "import sys\n"
        + _run_main(["upload", "--new", "--no-progress", str(clip)])
        + "import sophon_cli.client.models as models\n"
        "print(sorted(n for n in ('Job', 'JobList', 'Webhook', 'WebhookEvent') if n in vars(models)),\n"
        "      'sophon_cli.client.job_models' in sys.modules)\n"
        "from sophon_cli.client.models import Job, WebhookList\n"
        "print(Job.model_validate({'id': 'job_1', 'status': 'queued'}).id, WebhookList().webhooks)\n"
    )
    env = cli_env(server, tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["[] False", "job_1 []"]


def test_the_plugin_loader_stand_in_hands_any_other_name_to_pydantics_own_loader(tmp_path):
    """The stand-in answers only ``get_plugins``; a name a later pydantic might also want from its
    loader comes from the real module (loaded then), so an upgrade can never break start-up."""
    code = (
        "import os, sys\n"
        f"os.environ.update(SOPHON_HOME={str(tmp_path)!r})\n"
        "os.environ.pop('PYDANTIC_DISABLE_PLUGINS', None)\n"
        + _run_main(["config", "show"])
        + "from pydantic.plugin._loader import get_plugins, PYDANTIC_ENTRY_POINT_GROUP\n"
        "import pydantic.plugin._loader as now\n"
        "print(tuple(get_plugins()), PYDANTIC_ENTRY_POINT_GROUP, hasattr(now, 'entry_points'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["()", "pydantic", "True"]
