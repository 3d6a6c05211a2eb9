"""The one home of the file helpers: hashing, directory fsync, private files, and the safe writer.

* :func:`sha256_file` — hex sha256 of a file, read in large blocks.
* :func:`fsync_dir` — make a rename/creation in ``directory`` durable (a no-op where unsupported).
* :func:`write_private_file` — atomically replace a small file with mode 0600 (in a 0700 directory
  when asked), never through a symlink.

Pure standard library: no httpx, no pydantic, no CLI.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

READ_BLOCK = 1 << 20  # 1 MiB: large enough that hashing runs at memory speed
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = stat.S_IRWXU  # 0700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def sha256_file(path: str | os.PathLike[str], *, block: int = READ_BLOCK) -> str:
    """The hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync ``directory`` so that a rename or creation inside it survives a crash."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - not supported on every platform
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) and make it 0700."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    os.chmod(p, PRIVATE_DIR_MODE)
    return p


def write_private_file(
    path: str | os.PathLike[str], data: bytes, *, private_dir: bool = False, durable: bool = True
) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from the first byte.

    The temporary file is created next to the target with ``O_EXCL | O_NOFOLLOW`` (a planted
    symlink is never written through), fsynced, renamed over the target and the directory fsynced
    (``durable=False`` skips both fsyncs). ``private_dir`` also creates the parent as 0700.
    """
    target = Path(path)
    if private_dir:
        ensure_private_dir(target.parent)
    tmp = target.with_name(f".{target.name[:32]}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(target.parent)


__all__ = [
    "READ_BLOCK",
    "ensure_private_dir",
    "fsync_dir",
    "sha256_file",
    "write_private_file",
]
