"""The pure parts of the library (signature checks, idempotency keys, errors) stay cheap to import."""

from __future__ import annotations

import subprocess
import sys


def test_pure_modules_do_not_import_httpx_or_pydantic():
    code = (
        "import sys\n"
        "import sophon_cli.client, sophon_cli.client.webhooks, sophon_cli.client.idempotency, "
        "sophon_cli.client.errors\n"
        "from sophon_cli.client import verify_signature\n"
        "print(sorted(m for m in ('httpx', 'pydantic', 'rich', 'typer') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
