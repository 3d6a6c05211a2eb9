"""The one home of the file helpers: hashing, directory fsync, private files, and the safe writer.

* :func:`sha256_file` — hex sha256 of a file, read in large blocks.
* :func:`fsync_dir` — make a rename/creation in ``directory`` durable (a no-op where unsupported).
* :func:`start_writeback` — start writing a range of a file to the disk without waiting (Linux).
* :func:`write_private_file` — atomically replace a small file with mode 0600 (in a 0700 directory
  when asked), never through a symlink.
* :class:`SafeWriter` — the one writer of every file the tool creates for the user (downloads,
  encode outputs, fallback copies); :func:`copy_file` is it applied to a local copy;
  :class:`WriteBehind` writes a large body into it from a helper thread.

The safe writer's rules:

* bytes go to a short hidden ``.<hash>.sophon-part`` next to the target (short, so a long target
  name cannot make the temporary name too long); it is opened with ``O_NOFOLLOW`` and must be a
  regular file with one link, owned by us — anything else found there (a symlink, a hard link to
  another file, a FIFO) is removed, never followed or written through;
* the ``.part`` is owned through an exclusive ``flock`` on it: a concurrent writer of the same target
  waits, then either finds the verified target in place (``already_present``: done, not failed) or
  carries on from what is there;
* an existing target it did not write is refused unless ``force`` (:class:`TargetExistsError`); a
  target that already holds exactly the expected bytes (sha256) is left alone (``already_present``);
  a symlink at the target is never written through (with ``force`` it is replaced by a regular file);
* never more than ``expected_size`` bytes are written (:class:`SizeExceededError`);
* :meth:`SafeWriter.commit` always verifies — the sha256 when one is known, else the size — and says
  how in :attr:`WriteResult.verification` (``verified`` is True only for a sha256 match), then
  fsyncs the file, moves it into place (without replacing anything unless allowed) and fsyncs the
  directory. While writing, every :data:`WRITEBACK_STEP` bytes are handed to the disk at once
  (:func:`start_writeback`), so that the fsync finds little left to do.

Pure standard library: no httpx, no pydantic, no CLI.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # POSIX: the .part is owned through an flock on it
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock
    fcntl = None  # type: ignore[assignment]

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


WRITEBACK_STEP = 16 << 20  # SafeWriter starts the writeback of every 16 MiB written
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the dirty pages of the range, do not wait
_writeback_fn: Callable[[int, int, int], bool] | None = None


def _load_writeback() -> Callable[[int, int, int], bool]:
    def unsupported(fd: int, offset: int, length: int) -> bool:
        return False

    if not sys.platform.startswith("linux"):
        return unsupported
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, OSError, AttributeError):  # pragma: no cover - a libc without it
        return unsupported
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def sync_file_range(fd: int, offset: int, length: int) -> bool:
        return fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0

    return sync_file_range


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Start writing ``length`` bytes of ``fd`` from ``offset`` to the disk, without waiting for
    them (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; elsewhere nothing happens). Not a
    durability guarantee: the fsync that follows still is one, but finds little left to write.
    Returns whether the kernel took the request."""
    global _writeback_fn
    if _writeback_fn is None:
        _writeback_fn = _load_writeback()
    return _writeback_fn(fd, offset, length)


# -- writing around the page cache (O_DIRECT) -------------------------------------------------------

UNCACHED_MIN_SIZE = 64 << 20  # files expected this large are written around the page cache
UNCACHED_FILE_SYSTEMS = frozenset({"ext4", "xfs"})  # local block file systems where it is plain sailing
_ALIGN = 4096  # O_DIRECT: buffer address, file offset and length aligned to the logical block
_STAGE = 1 << 20
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def file_system_type(fd: int) -> str | None:
    """The type of the file system holding the open file ``fd`` (``ext4``, ``nfs``, ...), from
    ``/proc/self/mountinfo`` matched by device number; None where that is not known."""
    try:
        dev = os.fstat(fd).st_dev
        want = f"{os.major(dev)}:{os.minor(dev)}"
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split(" ", 3)
                if len(fields) > 2 and fields[2] == want and " - " in line:
                    return line.split(" - ", 1)[1].split(" ", 1)[0]
    except (OSError, ValueError):
        pass
    return None


class _Uncached:
    """Appends to ``fd`` with ``O_DIRECT``: blocks go from an aligned staging buffer straight to
    the disk, with no page cache pages to allocate, fill and write back (on the VM measured, that
    was most of a download's CPU: 0.1 s instead of 0.25-2 s per GiB, and no fsync backlog).
    Whatever is not a whole staging buffer waits in it until :meth:`flush`, which writes the
    aligned part the same way and the tail through the page cache, and turns ``O_DIRECT`` off."""

    def __init__(self, fd: int) -> None:
        import mmap

        self.fd = fd
        self._buf = mmap.mmap(-1, _STAGE)  # page-aligned, so the address is aligned
        self._view = memoryview(self._buf)
        self.staged = 0

    @classmethod
    def start(cls, fd: int, offset: int) -> _Uncached | None:
        """Turn ``O_DIRECT`` on for ``fd`` (at ``offset``) where that is known to work well, else None."""
        if not _O_DIRECT or fcntl is None or offset % _ALIGN:
            return None
        if file_system_type(fd) not in UNCACHED_FILE_SYSTEMS:
            return None  # network, FUSE, tmpfs, ...: the page cache is the better path there
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | _O_DIRECT)
        except OSError:
            return None
        return cls(fd)

    def write(self, data: bytes | bytearray | memoryview, *, aligned: bool = False) -> None:
        """Append ``data``. ``aligned``: ``data`` lies at a page-aligned address (an mmap'd buffer of
        the caller's), so a whole number of blocks is written from it directly, without the copy
        into the stage."""
        view = memoryview(data).cast("B")
        if aligned and not self.staged and view and not len(view) % _ALIGN:
            self._write_direct(view)
            return
        while view:
            k = min(len(view), _STAGE - self.staged)
            self._view[self.staged : self.staged + k] = view[:k]
            self.staged += k
            view = view[k:]
            if self.staged == _STAGE:
                self._write_out(_STAGE)

    def _write_direct(self, view: memoryview) -> None:
        """Write all of ``view`` (aligned address and length) at the file's aligned offset."""
        done, n = 0, len(view)
        try:
            while done < n:
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._buffered()  # refused after all (an odd device): the page cache from here on
            while done < n:
                done += os.write(self.fd, view[done:])

    def _write_out(self, n: int) -> None:
        """Write the first ``n`` (aligned) staged bytes; keep the rest at the start of the buffer."""
        self._write_direct(self._view[:n])
        rest = self.staged - n
        if rest:
            self._view[:rest] = self._view[n : self.staged]
        self.staged = rest

    def _buffered(self) -> None:
        assert fcntl is not None
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~_O_DIRECT)

    def discard(self) -> None:
        """Forget what is staged (the file was truncated)."""
        self.staged = 0

    def flush(self) -> None:
        """Everything staged into the file; ``O_DIRECT`` off again."""
        aligned = self.staged - self.staged % _ALIGN
        if aligned:
            self._write_out(aligned)
        self._buffered()
        tail = self._view[: self.staged]
        while tail:
            tail = tail[os.write(self.fd, tail) :]
        self.staged = 0

    def close(self) -> None:
        try:
            self._view.release()
            self._buf.close()
        except BufferError:  # pragma: no cover - a view still alive: freed with it
            pass


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


# -- the safe writer ------------------------------------------------------------------------------

PART_SUFFIX = ".sophon-part"
NAME_MAX = 255
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def part_path(target: str | os.PathLike[str], seed: str | None = None) -> Path:
    """The resumable temporary file of ``target``: ``.<16 hex>.sophon-part`` in the same directory
    (derived from ``seed``, by default the target's name)."""
    t = Path(target)
    key = t.name if seed is None else seed
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return t.with_name(f".{digest}{PART_SUFFIX}")


def name_too_long(target: str | os.PathLike[str]) -> bool:
    """True when the last component of ``target`` is longer than the file system allows."""
    t = Path(target)
    limit = NAME_MAX
    try:
        limit = os.pathconf(t.parent if str(t.parent) else ".", "PC_NAME_MAX") or NAME_MAX
    except (OSError, ValueError, AttributeError):
        pass
    return len(os.fsencode(t.name)) > limit


@dataclass(frozen=True)
class WriteResult:
    """What a :class:`SafeWriter` did. ``verified`` is True only when the bytes matched a known
    sha256; ``verification`` says in words how they were checked. ``already_present``: the target
    already held exactly these bytes and nothing was written."""

    path: str
    bytes: int
    sha256: str | None
    verified: bool
    verification: str
    resumed_from: int = 0
    already_present: bool = False


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _ours(st: os.stat_result) -> bool:
    """A regular file with a single link, owned by this user: safe to append to."""
    uid = os.geteuid() if hasattr(os, "geteuid") else st.st_uid
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == uid


def _write_error(target: Path, exc: OSError) -> Exception:
    from sophon_cli.client.errors import InputError

    hint = (
        "free some disk space or choose another output location"
        if exc.errno in _NO_SPACE
        else "check the output location and its permissions, or choose another one"
    )
    return InputError(f"cannot write {target} ({exc.strerror or exc})", hint=hint)


class SafeWriter:
    """Write one user file safely (see the module docstring). Use as a context manager::

        with SafeWriter(target, expected_size=n, expected_sha256=h) as w:
            if w.already_present:
                return w.result
            if w.offset: ...            # resume: ask for the bytes from w.offset on
            w.write(block)              # or w.restart() to begin again from zero
            result = w.commit()

    Leaving the block without :meth:`commit` keeps a non-empty ``.part`` (a rerun resumes from it)
    and never touches the target. ``expected_size`` may also be set once the size is learnt (e.g.
    from a Content-Length). ``part_seed`` names the ``.part`` when the final name is only known
    later (:meth:`set_target`).
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        force: bool = False,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        resume: bool = True,
        part_seed: str | None = None,
        target_known: bool = True,
    ) -> None:
        self.target = Path(target)
        self.force = force
        self._expected_size = expected_size
        self.expected_sha256 = (expected_sha256 or "").lower() or None
        self.resume = resume
        self.part = part_path(self.target, part_seed)
        self.already_present = False
        self.result: WriteResult | None = None
        self.resumed_from = 0
        self._fd: int | None = None
        self._hasher: Any = hashlib.sha256()
        self._written = 0
        self._writeback_from = 0  # the bytes before this offset were handed to the disk
        self._uncached: _Uncached | None = None  # O_DIRECT appends (large files, local disks)
        self._uncached_tried = False
        self._replace = False
        self._committed = False
        self._target_pending = not target_known
        self._broken: BaseException | None = None  # set when a WriteBehind's write failed

    # -- properties -----------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Bytes already in the ``.part`` (where the next :meth:`write` continues)."""
        return self._written

    @property
    def expected_size(self) -> int | None:
        return self._expected_size

    @expected_size.setter
    def expected_size(self, value: int | None) -> None:
        self._expected_size = value
        if value is not None and self._written > value:
            self.restart()

    # -- entering: directory, lock, target checks ---------------------------------------------------

    def __enter__(self) -> SafeWriter:
        from sophon_cli.client.errors import InputError

        if name_too_long(self.target):
            raise InputError(
                f"the file name {self.target.name[:40]}… is too long for the file system",
                hint="choose a shorter output name",
            )
        directory = self.target.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create directory {directory} ({exc.strerror or exc})",
                hint="choose another output location",
            ) from None
        before = _lstat(self.target)
        checking = not self._target_pending  # pending: the caller names the target later (set_target)
        if checking:
            self._check_target(before, appeared=False, early=True)
        try:
            self._fd = self._open_part()
        except OSError as exc:
            raise _write_error(self.target, exc) from None  # the user's name, not our hidden one
        try:
            if checking:
                self._check_target(_lstat(self.target), appeared=before is None)
            if not self.already_present:
                self._load_part()
        except BaseException:
            self._close(discard_empty=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close(discard_empty=True)

    def _open_part(self) -> int:
        """Open (create) the ``.part`` as a regular file of ours and hold its lock."""
        flags = (
            os.O_RDWR | os.O_CREAT | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        for _ in range(64):
            st = _lstat(self.part)
            if st is not None and not _ours(st):
                self._remove_foreign_part(st)
                continue
            created = False
            try:
                try:
                    fd = os.open(self.part, flags | os.O_EXCL, 0o666)
                    created = True  # made by us just now (whatever owner the file system records)
                except FileExistsError:
                    fd = os.open(self.part, flags, 0o666)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EMLINK):
                    # a symlink (or a FIFO, a directory) planted since the lstat: remove it
                    st = _lstat(self.part)
                    if st is not None:
                        self._remove_foreign_part(st)
                    continue
                raise
            try:
                st = os.fstat(fd)
                if not (stat.S_ISREG(st.st_mode) and (created or _ours(st))):
                    os.close(fd)
                    st2 = _lstat(self.part)
                    if st2 is not None:
                        self._remove_foreign_part(st2)
                    continue
                if fcntl is not None:
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
                    fcntl.flock(fd, fcntl.LOCK_EX)  # a concurrent writer of this target waits here
                now = _lstat(self.part)
                if now is None or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                    os.close(fd)  # the holder committed (renamed) or removed it meanwhile: again
                    continue
                return fd
            except BaseException:
                try:
                    os.close(fd)
                except OSError:
                    pass
                raise
        raise OSError(errno.EBUSY, "the temporary file keeps changing", str(self.part))

    def _remove_foreign_part(self, st: os.stat_result) -> None:
        """Something we did not make sits at the ``.part`` path: remove it (never follow it)."""
        from sophon_cli.client.errors import InputError

        try:
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(self.part)
            else:
                os.unlink(self.part)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InputError(
                f"cannot replace {self.part} ({exc.strerror or exc})",
                hint="remove it, or choose another output location",
            ) from None

    def _check_target(self, st: os.stat_result | None, *, appeared: bool, early: bool = False) -> None:
        from sophon_cli.client.errors import TargetExistsError

        if st is None:
            return
        if stat.S_ISLNK(st.st_mode):
            if not self.force:
                raise TargetExistsError(str(self.target), kind="symlink")
            self._replace = True
            return
        if stat.S_ISDIR(st.st_mode):
            raise TargetExistsError(str(self.target), kind="directory")
        if early:
            # before the lock: only the cheap refusal of what no verification can accept
            if not self.force and self.expected_sha256 is None and self._expected_size is None:
                raise TargetExistsError(str(self.target))
            return
        if stat.S_ISREG(st.st_mode) and self._target_matches(st):
            self._present(st.st_size, self.expected_sha256, verified=True)
            return
        if (
            appeared
            and stat.S_ISREG(st.st_mode)
            and self.expected_sha256 is None
            and self._expected_size is not None
            and st.st_size == self._expected_size
        ):
            # another writer of this target finished while we waited for its lock
            self._present(st.st_size, None, verified=False)
            return
        if not self.force:
            raise TargetExistsError(str(self.target))
        self._replace = True

    def _target_matches(self, st: os.stat_result) -> bool:
        if self.expected_sha256 is None:
            return False
        if self._expected_size is not None and st.st_size != self._expected_size:
            return False
        try:
            fd = os.open(self.target, os.O_RDONLY | _NOFOLLOW)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as fh:
            h = hashlib.sha256()
            for block in iter(lambda: fh.read(READ_BLOCK), b""):
                h.update(block)
        return h.hexdigest() == self.expected_sha256

    def _present(self, size: int, sha: str | None, *, verified: bool) -> None:
        self.already_present = True
        how = "sha256 matches" if verified else f"size matches ({size} bytes; no sha256 to check)"
        self.result = WriteResult(
            path=str(self.target),
            bytes=size,
            sha256=sha,
            verified=verified,
            verification=f"already in place: {how}",
            already_present=True,
        )

    def _load_part(self) -> None:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if not self.resume or (self._expected_size is not None and size > self._expected_size):
            self.restart()
            return
        self._hasher = hashlib.sha256()
        done = 0
        os.lseek(self._fd, 0, os.SEEK_SET)
        while done < size:
            block = os.read(self._fd, min(READ_BLOCK, size - done))
            if not block:
                break
            self._hasher.update(block)
            done += len(block)
        self._written = self._writeback_from = done
        self.resumed_from = done
        os.lseek(self._fd, done, os.SEEK_SET)

    # -- writing --------------------------------------------------------------------------------

    def restart(self) -> None:
        """Throw away what the ``.part`` holds and begin again from byte zero."""
        assert self._fd is not None, "use SafeWriter as a context manager"
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise _write_error(self.target, exc) from None
        os.lseek(self._fd, 0, os.SEEK_SET)
        if self._uncached is not None:
            self._uncached.discard()
        else:
            self._uncached_tried = False  # from zero: aligned again
        self._hasher = hashlib.sha256()
        self._written = self._writeback_from = 0
        self.resumed_from = 0
        self._broken = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``. More than ``expected_size`` in total raises SizeExceededError; nothing of
        the body is kept then (the ``.part`` is emptied)."""
        assert self._fd is not None, "use SafeWriter as a context manager"
        n = len(data)
        self._check_room(self._written, n)
        self._start_uncached()
        self._append(data)
        self._hasher.update(data)

    def write_behind(self) -> WriteBehind:
        """A :class:`WriteBehind` into this writer, for a large body (use it as a context manager;
        no other writing meanwhile)."""
        return WriteBehind(self)

    def _check_room(self, written: int, n: int) -> None:
        """The size rule: ``n`` more bytes after ``written`` must fit in ``expected_size``, else the
        ``.part`` is emptied and SizeExceededError raised."""
        from sophon_cli.client.errors import SizeExceededError

        if self._expected_size is not None and written + n > self._expected_size:
            self.restart()
            raise SizeExceededError(str(self.target), self._expected_size, received=written + n)

    def _start_uncached(self) -> None:
        if not self._uncached_tried:
            self._uncached_tried = True
            assert self._fd is not None
            if self._expected_size is not None and self._expected_size >= UNCACHED_MIN_SIZE:
                self._uncached = _Uncached.start(self._fd, self._written)

    def _append(self, data: bytes | bytearray | memoryview, *, aligned: bool = False) -> None:
        """Put ``data`` into the ``.part`` (not hashed here: the caller hashes exactly these bytes)."""
        assert self._fd is not None
        try:
            if self._uncached is not None:
                self._uncached.write(data, aligned=aligned)
            else:
                view = memoryview(data)
                while view:
                    k = os.write(self._fd, view)
                    view = view[k:]
        except OSError as exc:
            raise _write_error(self.target, exc) from None
        self._written += len(data)
        if self._uncached is None and self._written - self._writeback_from >= WRITEBACK_STEP:
            # hand what was written to the disk now, while receiving: the fsync in commit() then
            # waits for the last step only (0.1-0.5 s per GiB less on the machines measured)
            start_writeback(self._fd, self._writeback_from, self._written - self._writeback_from)
            self._writeback_from = self._written

    # -- committing -------------------------------------------------------------------------------

    def commit(self) -> WriteResult:
        """Verify, fsync and move the ``.part`` into place; return what was written."""
        from sophon_cli.client.errors import IntegrityError, TargetExistsError

        assert self._fd is not None, "use SafeWriter as a context manager"
        if self._target_pending:
            raise ValueError("set_target() must name the target before commit()")
        if self.already_present:
            assert self.result is not None
            return self.result
        if self._broken is not None:
            raise self._broken  # a write behind failed: the hash no longer matches the .part
        self._flush_staged()
        size = self._written
        sha = self._hasher.hexdigest()
        want = self._expected_size
        if want is not None and size != want:
            raise IntegrityError(f"{self.target}: got {size} bytes, expected {want}")
        if self.expected_sha256 is not None and sha != self.expected_sha256:
            self.restart()
            raise IntegrityError(
                f"{self.target}: sha256 {sha} differs from the expected {self.expected_sha256}"
            )
        if self.expected_sha256 is not None:
            verified, how = True, "sha256 matches"
        elif want is not None:
            verified, how = False, f"size matches ({size} bytes); no sha256 was available to check"
        else:
            verified, how = False, "not verified: neither a sha256 nor a size was available"
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise _write_error(self.target, exc) from None
        st = _lstat(self.target)
        if st is not None and not self._replace:
            # appeared since we looked: the same verified bytes are fine, anything else is refused
            if stat.S_ISREG(st.st_mode) and self._target_matches(st):
                self._present(st.st_size, self.expected_sha256, verified=True)
                self._close(discard_empty=True, discard=True)
                assert self.result is not None
                return self.result
            if not self.force or stat.S_ISDIR(st.st_mode):
                kind = (
                    "symlink"
                    if stat.S_ISLNK(st.st_mode)
                    else "directory"
                    if stat.S_ISDIR(st.st_mode)
                    else "file"
                )
                raise TargetExistsError(str(self.target), kind=kind)
            self._replace = True
        try:
            if self._replace:
                os.replace(self.part, self.target)  # replaces a symlink itself, never its target
            else:
                self._install_no_clobber()
        except FileExistsError:
            raise TargetExistsError(str(self.target)) from None
        except OSError as exc:
            raise _write_error(self.target, exc) from None
        self._committed = True
        fsync_dir(self.target.parent)
        self.result = WriteResult(
            path=str(self.target),
            bytes=size,
            sha256=sha,
            verified=verified,
            verification=how,
            resumed_from=self.resumed_from,
        )
        self._close(discard_empty=False)
        return self.result

    def _install_no_clobber(self) -> None:
        """Move the ``.part`` to the target without replacing anything that appeared there."""
        try:
            os.link(self.part, self.target, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            # no hard links on this file system: a plain rename (the target was absent just now)
            if _lstat(self.target) is not None:
                raise FileExistsError(errno.EEXIST, "exists", str(self.target)) from None
            os.replace(self.part, self.target)
            return
        try:
            os.unlink(self.part)
        except FileNotFoundError:  # a waiting writer saw two links and removed the name first
            pass

    def set_target(self, target: str | os.PathLike[str]) -> None:
        """Change the final name (same directory) once it is known; the target checks run again
        (``already_present`` may become True, or TargetExistsError is raised)."""
        new = Path(target)
        if new == self.target and not self._target_pending:
            return
        self.target = new
        self._replace = False
        self._target_pending = False
        self._check_target(_lstat(new), appeared=False)

    def _flush_staged(self) -> None:
        """What the O_DIRECT stage holds into the ``.part``, and plain writes from here on."""
        uncached, self._uncached = self._uncached, None
        if uncached is None:
            return
        try:
            uncached.flush()
        except OSError as exc:
            raise _write_error(self.target, exc) from None
        finally:
            uncached.close()

    def _close(self, *, discard_empty: bool, discard: bool = False) -> None:
        if self._uncached is not None:
            if self._fd is not None and not self._committed and not discard:
                try:
                    self._flush_staged()  # an interrupted download keeps every byte it received
                except Exception:
                    pass  # e.g. the disk is full: the .part is shorter and a rerun fetches the rest
            else:
                self._uncached.close()
            self._uncached = None
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self._committed and (discard or (discard_empty and self._written == 0)):
                try:
                    if os.fstat(fd).st_size == 0 or discard:
                        os.unlink(self.part)
                except OSError:
                    pass
        finally:
            os.close(fd)  # releases the lock


WRITE_BEHIND_BLOCK = 4 << 20  # one buffer: a whole number of O_DIRECT blocks, one write(2) each
WRITE_BEHIND_DEPTH = 3  # buffers (12 MiB in all): one receiving, one being hashed, one being written


class WriteBehind:
    """A large body into a :class:`SafeWriter` in three overlapping steps: the caller's thread
    receives straight into a few page-aligned buffers; a helper thread (``sophon-hash-behind``)
    hashes each full buffer; another (``sophon-write-behind``) writes it, then the buffer is
    received into again.

    Receiving, hashing and writing each have a thread, so the socket keeps draining while the
    sha256 and the disk writes run; with ``O_DIRECT`` (:class:`_Uncached`) a full buffer goes to
    the disk in one ``write`` from where it was received, with no copy. The hash is of exactly
    the bytes written: the buffers pass in order through the hasher, then the writer, and nothing
    changes a buffer until the writer has written it. Memory stays at ``WRITE_BEHIND_DEPTH``
    buffers.

    Use :meth:`buffer` / :meth:`received` (receive into the buffer, then say how much came) or
    :meth:`write` (bytes from elsewhere, copied in). :meth:`close` (also on leaving the ``with``
    block) hands over the partly filled buffer too and waits for both helpers: whatever was
    received is in the ``.part`` before it returns, so an interrupted download resumes from all
    of it. The size rule is :meth:`SafeWriter.write`'s; a write's error comes back at the next
    buffer or at :meth:`close`, and a writer whose write behind failed refuses to commit."""

    def __init__(
        self, w: SafeWriter, *, block: int = WRITE_BEHIND_BLOCK, depth: int = WRITE_BEHIND_DEPTH
    ) -> None:
        import mmap
        import queue
        import threading

        assert w._fd is not None, "use SafeWriter as a context manager"
        assert block % _ALIGN == 0 and depth >= 2
        self._w = w
        w._start_uncached()
        self._buffers = [mmap.mmap(-1, block) for _ in range(depth)]  # page-aligned
        self._free: queue.Queue[Any] = queue.Queue()
        for buf in self._buffers:
            self._free.put(buf)
        self._to_hash: queue.Queue[Any] = queue.Queue()  # (buffer, length) in order; None: the end
        self._to_write: queue.Queue[Any] = queue.Queue()
        self._buf: Any = None
        self._view: memoryview | None = None
        self._filled = 0
        self._handed = w.offset  # bytes received so far (the size rule counts them)
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._hash_run, name="sophon-hash-behind", daemon=True),
            threading.Thread(target=self._write_run, name="sophon-write-behind", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def buffer(self) -> memoryview:
        """Where the next bytes go: the free rest of the current buffer (never empty)."""
        if self._view is None:
            if self._error is not None:
                raise self._error
            self._buf = self._free.get()
            if self._error is not None:
                self._free.put(self._buf)
                self._buf = None
                raise self._error
            self._view = memoryview(self._buf)
            self._filled = 0
        return self._view[self._filled :]

    def received(self, n: int) -> None:
        """``n`` bytes were put at the start of the last :meth:`buffer`."""
        assert self._view is not None and 0 <= n <= len(self._view) - self._filled
        self._filled += n
        if self._filled == len(self._view):
            self._hand_over()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (copied into the buffers)."""
        view = memoryview(data).cast("B")
        while view:
            dst = self.buffer()
            k = min(len(dst), len(view))
            dst[:k] = view[:k]
            del dst
            self.received(k)
            view = view[k:]

    def _hand_over(self) -> None:
        view, buf, n = self._view, self._buf, self._filled
        self._view = self._buf = None
        assert view is not None
        view.release()
        w = self._w
        if n and w.expected_size is not None and self._handed + n > w.expected_size:
            self._free.put(buf)
            self._settle()  # what was handed over is written; then the size rule empties the .part
            w._check_room(self._handed, n)
        if not n:
            self._free.put(buf)
            return
        self._handed += n
        self._to_hash.put((buf, n))

    def _settle(self) -> None:
        """Wait until every buffer handed over is hashed and written."""
        self._to_hash.join()
        self._to_write.join()

    def _hash_run(self) -> None:
        w = self._w
        while True:
            item = self._to_hash.get()
            try:
                if item is not None:
                    buf, n = item
                    with memoryview(buf) as whole, whole[:n] as view:
                        w._hasher.update(view)
                self._to_write.put(item)
            finally:
                self._to_hash.task_done()
            if item is None:
                return

    def _write_run(self) -> None:
        w = self._w
        while True:
            item = self._to_write.get()
            try:
                if item is None:
                    return
                buf, n = item
                if self._error is None:
                    try:
                        with memoryview(buf) as whole, whole[:n] as view:
                            w._append(view, aligned=True)
                    except BaseException as exc:  # kept for the receiving thread; later buffers are dropped
                        self._error = exc
                self._free.put(buf)
            finally:
                self._to_write.task_done()

    def close(self) -> None:
        """Hand over the partly filled buffer, wait for both helpers, free the buffers; raise a
        write's error, if any."""
        try:
            if self._view is not None and self._error is None:
                self._hand_over()
        finally:
            if self._view is not None:
                self._view.release()
                self._view = None
            if self._threads[0].is_alive():
                self._to_hash.put(None)  # the hasher passes it on to the writer
            for t in self._threads:
                t.join()
            for buf in self._buffers:
                try:
                    buf.close()
                except BufferError:  # pragma: no cover - a view still alive: freed with it
                    pass
        error, self._error = self._error, None
        if error is not None:
            self._w._broken = error
            raise error


def copy_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    force: bool = False,
    expected_sha256: str | None = None,
) -> WriteResult:
    """Copy ``src`` to ``dst`` through the safe writer (verified, atomic, never clobbering)."""
    size = os.stat(src).st_size
    with SafeWriter(dst, force=force, expected_size=size, expected_sha256=expected_sha256, resume=False) as w:
        if w.already_present:
            assert w.result is not None
            return w.result
        with open(src, "rb") as fh:
            for block in iter(lambda: fh.read(READ_BLOCK), b""):
                w.write(block)
        return w.commit()


__all__ = [
    "PART_SUFFIX",
    "READ_BLOCK",
    "SafeWriter",
    "WriteBehind",
    "WriteResult",
    "copy_file",
    "name_too_long",
    "part_path",
    "ensure_private_dir",
    "fsync_dir",
    "file_system_type",
    "sha256_file",
    "start_writeback",
    "write_private_file",
]
