"""What identifies a file's *content* before it has been read in full.

An upload session is keyed on the content, never on the path, name or mtime, so a rerun, a copy
under another name and another machine all find the same session. The full sha256 is only known
after the one read pass that also sends the parts, so the session key uses a cheap
**fingerprint** instead::

    fp1 = sha256("sophon-fp1", size, first MiB, 8 evenly spaced 64 KiB blocks, last MiB)

(a file of at most 2.5 MiB is hashed whole). Two different files can share a fingerprint (same
size, same sampled blocks, a change elsewhere); the upload engine detects that at ``complete``
(the server's sha256 is not the local one) and moves to a key derived from the full sha256, so a
collision costs a second upload, never a wrong one.

The name and MIME type sent when the session is created are part of the request body, and the
server answers 409 to one Idempotency-Key with two bodies. So they are derived from the content
as well: the container is recognised from the first bytes (:func:`sniff_container`) and the name
is ``<fingerprint prefix><extension>``. Only for content that is not recognised does the local
file's extension decide (and then it is part of the key, so nothing clashes).
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sophon_cli.client.idempotency import intent_key

FINGERPRINT_VERSION = "fp1"
HEAD = 1024 * 1024  # first and last MiB
SAMPLE = 64 * 1024  # each evenly spaced block
SAMPLES = 8
WHOLE_FILE_LIMIT = 2 * HEAD + SAMPLES * SAMPLE  # at most this many bytes: hash everything
SNIFF_BYTES = 1024  # first bytes kept for recognising the container


class ShortRead(Exception):
    """The file ended before its recorded size (it changed while being read)."""


@dataclass(frozen=True)
class Container:
    extension: str  # with the dot, lower case
    mime_type: str


def sample_ranges(size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` ranges of a file of ``size`` bytes that the fingerprint reads."""
    if size <= WHOLE_FILE_LIMIT:
        return [(0, size)] if size > 0 else []
    ranges = [(0, HEAD)]
    span = size - 2 * HEAD - SAMPLE  # the interior blocks start in [HEAD, size - HEAD - SAMPLE]
    for i in range(SAMPLES):
        ranges.append((HEAD + span * i // (SAMPLES - 1), SAMPLE))
    ranges.append((size - HEAD, HEAD))
    return ranges


def _pread_exact(fd: int, offset: int, length: int) -> bytes:
    chunks = []
    while length > 0:
        data = os.pread(fd, length, offset)
        if not data:
            raise ShortRead(offset)
        chunks.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(chunks)


def fingerprint_fd(fd: int, size: int) -> tuple[str, bytes]:
    """``(fingerprint, first bytes)`` of an open file of ``size`` bytes (read with ``pread``, so the
    file position is untouched). Raises :class:`ShortRead` when the file is shorter than ``size``."""
    h = hashlib.sha256(f"sophon-{FINGERPRINT_VERSION}\0".encode())
    h.update(size.to_bytes(8, "big"))
    head = b""
    for offset, length in sample_ranges(size):
        data = _pread_exact(fd, offset, length)
        if offset == 0:
            head = data[:SNIFF_BYTES]
        h.update(offset.to_bytes(8, "big"))
        h.update(data)
    return f"{FINGERPRINT_VERSION}-{h.hexdigest()}", head


def fingerprint(path: str | os.PathLike[str]) -> str:
    """The content fingerprint of a file (see the module docstring)."""
    with open(path, "rb") as fh:
        return fingerprint_fd(fh.fileno(), os.fstat(fh.fileno()).st_size)[0]


_FTYP_MIME = {
    b"qt  ": Container(".mov", "video/quicktime"),
    b"M4V ": Container(".m4v", "video/x-m4v"),
    b"M4VH": Container(".m4v", "video/x-m4v"),
    b"M4VP": Container(".m4v", "video/x-m4v"),
}


def sniff_container(head: bytes) -> Container | None:
    """The container of a file from its first bytes (up to ``SNIFF_BYTES``), or None."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _FTYP_MIME.get(head[8:12], Container(".mp4", "video/mp4"))
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska or WebM (DocType near the start)
        if b"webm" in head[:64]:
            return Container(".webm", "video/webm")
        return Container(".mkv", "video/x-matroska")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Container(".avi", "video/x-msvideo")
    if head[:10] == b"YUV4MPEG2 ":
        return Container(".y4m", "video/x-yuv4mpeg")
    if head[:4] == b"\x06\x0e\x2b\x34":  # SMPTE universal label
        return Container(".mxf", "application/mxf")
    if len(head) > 2 * 188 and all(head[i] == 0x47 for i in (0, 188, 376)):  # MPEG-TS sync bytes
        return Container(".ts", "video/mp2t")
    return None


def content_name(fp: str, container: Container | None, fallback_extension: str) -> str:
    """The file name sent for content with fingerprint ``fp``: the same on every machine."""
    ext = container.extension if container is not None else fallback_extension.lower()[:16]
    digest = fp.rsplit("-", 1)[-1]
    return f"{digest[:16]}{ext}"


_CONTENT_NAME = re.compile(r"[0-9a-f]{16}(?:\.[^./\\]{1,15})?")


def is_content_name(name: str | None) -> bool:
    """Whether ``name`` has the shape :func:`content_name` gives (``b78aade545f3f7d5.mp4``): a name
    derived from the content, which tells a person nothing about which file it was."""
    return bool(name) and _CONTENT_NAME.fullmatch(name or "") is not None


DEFAULT_MIME = "video/mp4"
_EXTRA_MIME = {
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".mp4": "video/mp4",
    ".m4v": "video/x-m4v",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".ts": "video/mp2t",
    ".mts": "video/mp2t",
    ".mxf": "application/mxf",
    ".y4m": "video/x-yuv4mpeg",
}


def guess_mime_type(name: str) -> str:
    """The MIME type for a file name, ``video/mp4`` when nothing better is known."""
    ext = os.path.splitext(name)[1].lower()
    if ext in _EXTRA_MIME:
        return _EXTRA_MIME[ext]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or DEFAULT_MIME


@dataclass(frozen=True)
class UploadIdentity:
    """Everything that shapes an upload session's request and key, derived from the content."""

    size: int
    fingerprint: str
    name: str
    mime: str
    nonce: str | None = None

    def _fields(self) -> dict[str, object]:
        return {"size": self.size, "name": self.name, "mime": self.mime, "nonce": self.nonce}

    def fingerprint_key(self) -> str:
        """The base Idempotency-Key of the session found before the file is read."""
        return intent_key("upload", fingerprint=self.fingerprint, **self._fields())

    def sha256_key(self, sha256: str) -> str:
        """The base key used when the fingerprint's session holds other bytes."""
        return intent_key("upload-sha256", sha256=sha256.lower(), **self._fields())


def identify_fd(
    fd: int,
    size: int,
    path: str | os.PathLike[str],
    *,
    fingerprint: str | None = None,
    file_name: str | None = None,
    mime_type: str | None = None,
    nonce: str | None = None,
) -> UploadIdentity:
    """The identity of an open file (a known ``fingerprint`` skips the sampled reads)."""
    if fingerprint:
        head = os.pread(fd, SNIFF_BYTES, 0)
    else:
        fingerprint, head = fingerprint_fd(fd, size)
    container = sniff_container(head) if file_name is None or mime_type is None else None
    p = Path(path)
    name = file_name or content_name(fingerprint, container, p.suffix)
    mime = mime_type or (container.mime_type if container else guess_mime_type(p.name))
    return UploadIdentity(size, fingerprint, name, mime, nonce)


def identify(path: str | os.PathLike[str], **kwargs: object) -> UploadIdentity:
    """:func:`identify_fd` for a path."""
    with open(path, "rb") as fh:
        return identify_fd(fh.fileno(), os.fstat(fh.fileno()).st_size, path, **kwargs)  # type: ignore[arg-type]
