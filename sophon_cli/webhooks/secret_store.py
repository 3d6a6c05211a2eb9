"""The local store of webhook signing secrets (and the names given at creation).

``<config dir>/webhook-secrets.toml`` (0600 in a 0700 directory) holds one table per webhook id::

    [webhooks.wh_abc]
    secret = "..."          # only with `--save-secret`
    url = "https://example.com/hook"
    name = "ci"             # the spec's list reply carries no name; it is kept here

A webhook's secret is returned by the server once, at creation, so the store is checked *before*
anything is created (:meth:`SecretStore.check_writable`): an unreadable, malformed or unwritable
file is a :class:`SecretStoreError` (exit 2) naming the file, and nothing reaches the server.
Writes go through :func:`sophon_cli.client.files.write_private_file` (an ``O_EXCL | O_NOFOLLOW``
temporary file, fsync, rename: never through a symlink).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sophon_cli.client.errors import InputError

SECRETS_FILE = "webhook-secrets.toml"
SECRET_ENV = "SOPHON_WEBHOOK_SECRET"


class SecretStoreError(InputError):
    """The secrets file cannot be read, parsed or written (``.path``)."""

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


@dataclass(frozen=True)
class SavedWebhook:
    id: str
    url: str | None = None
    name: str | None = None
    secret: str | None = None


def default_path() -> Path:
    from sophon_cli.settings import config_dir

    return config_dir() / SECRETS_FILE


class SecretStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    # ---- reading ---------------------------------------------------------------------------
    def _read(self) -> dict:
        from sophon_cli.client.errors import ConfigError, ConfigFileError
        from sophon_cli.settings import read_config

        path = self.path
        try:
            info = path.lstat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self._error(f"cannot read {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise self._error(f"{path} is not a regular file", hint="move it away; it must be a plain file")
        try:
            return read_config(path)
        except ConfigError as exc:
            cause = exc.__cause__
            if isinstance(cause, PermissionError):
                raise self._error(
                    f"cannot read {path}: permission denied", hint="fix its permissions (0600)"
                ) from None
            if isinstance(exc, ConfigFileError):  # already "<path> line N: not valid TOML (...)"
                raise self._error(exc.message, hint="fix it by hand or move it away") from None
            detail = str(cause) if cause is not None else str(exc)
            raise self._error(
                f"{path} is not valid TOML ({detail})", hint="fix it by hand or move it away"
            ) from None
        except OSError as exc:
            raise self._error(f"cannot read {path}: {exc.strerror or exc}") from None

    def entries(self) -> dict[str, SavedWebhook]:
        """webhook id -> what is stored about it ({} when there is no file)."""
        hooks = self._read().get("webhooks", {})
        if not isinstance(hooks, dict):
            return {}
        found: dict[str, SavedWebhook] = {}
        for wid, entry in hooks.items():
            if not isinstance(entry, dict):
                continue
            found[wid] = SavedWebhook(
                id=wid,
                url=_text(entry.get("url")),
                name=_text(entry.get("name")),
                secret=_text(entry.get("secret")),
            )
        return found

    def secrets(self) -> dict[str, str]:
        """webhook id -> secret, for the entries that hold one."""
        return {wid: e.secret for wid, e in self.entries().items() if e.secret}

    def names(self) -> dict[str, str]:
        return {wid: e.name for wid, e in self.entries().items() if e.name}

    # ---- writing ---------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise :class:`SecretStoreError` unless a later :meth:`save` can succeed: the file (if any)
        is a readable, valid, regular file and its directory accepts a new file."""
        from sophon_cli.client.files import ensure_private_dir

        self._read()
        directory = self.path.parent
        try:
            ensure_private_dir(directory)
            probe = directory / f".{self.path.name}.{os.getpid()}.probe"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise self._error(
                f"cannot write to {directory}: {exc.strerror or exc}",
                hint="fix the directory's permissions, or set SOPHON_HOME to a writable directory",
            ) from None

    def save(self, webhook_id: str, *, url: str, secret: str | None = None, name: str | None = None) -> Path:
        """Record ``webhook_id`` (its secret, url and name); returns the file's path."""
        import tomli_w

        from sophon_cli.client.files import write_private_file

        data = self._read()
        hooks = data.get("webhooks")
        if not isinstance(hooks, dict):
            hooks = data["webhooks"] = {}
        entry = {"url": url}
        if secret:
            entry["secret"] = secret
        if name:
            entry["name"] = name
        hooks[webhook_id] = entry
        try:
            write_private_file(self.path, tomli_w.dumps(data).encode(), private_dir=True)
        except OSError as exc:
            raise self._error(f"cannot write {self.path}: {exc.strerror or exc}") from None
        return self.path

    def _error(self, message: str, *, hint: str | None = None) -> SecretStoreError:
        return SecretStoreError(message, path=self.path, hint=hint or "fix or move the file away")


def _text(value: object) -> str | None:
    return str(value) if isinstance(value, (str, int)) and str(value) else None


def resolve_secrets(secret: str | None, store: SecretStore | None = None) -> list[str]:
    """The given secret, else ``$SOPHON_WEBHOOK_SECRET``, else every saved secret (deduplicated)."""
    if secret:
        return [secret]
    env = os.environ.get(SECRET_ENV, "").strip()
    if env:
        return [env]
    return list(dict.fromkeys((store or SecretStore()).secrets().values()))
