"""A part's bytes reach the staging file exactly, whichever way they go: around the page cache in
aligned buffers written by worker threads (local ext4/xfs), or plain writes (an unaligned start,
an exhausted buffer pool, another file system)."""

from __future__ import annotations

import asyncio
import os

import pytest

from sophon_cli.client.files import UNCACHED_FILE_SYSTEMS, file_system_type
from sophon_cli.server.partsink import BUFFER, POOL, DirectBuffers, PartSink

SIZE = 2 * BUFFER + 3 * 4096 + 1234  # two whole buffers, an aligned rest and an unaligned tail
BODY = os.urandom(SIZE)


def _blocks(data: bytes, step: int = 65483):  # odd sizes, as recv hands them over
    return [data[i : i + step] for i in range(0, len(data), step)]


def _staging(tmp_path, size: int):
    path = tmp_path / "upl.part"
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def _uncached_here(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return file_system_type(fd) in UNCACHED_FILE_SYSTEMS
    finally:
        os.close(fd)


async def _write(path, start, data, pool, *, complete=True):
    sink = PartSink(path, start, pool)
    direct = sink.direct
    for block in _blocks(data):
        await sink.write(block)
    await sink.close(complete=complete)
    return direct


def test_a_part_written_around_the_page_cache_has_every_byte(tmp_path):
    path = _staging(tmp_path, SIZE + BUFFER)
    if not _uncached_here(path):
        pytest.skip("the temporary directory is not on local ext4/xfs")
    pool = DirectBuffers()
    assert asyncio.run(_write(path, BUFFER, BODY, pool)) is True
    assert path.read_bytes() == bytes(BUFFER) + BODY
    assert len(pool.take(POOL)) == POOL  # the part's buffers came back to the pool


def test_plain_writes_where_o_direct_cannot_be_used(tmp_path):
    path = _staging(tmp_path, SIZE + 1000)
    assert asyncio.run(_write(path, 1000, BODY, DirectBuffers())) is False  # unaligned offset
    assert path.read_bytes() == bytes(1000) + BODY
    path = _staging(tmp_path, SIZE)
    assert asyncio.run(_write(path, 0, BODY, DirectBuffers(count=1))) is False  # pool exhausted
    assert path.read_bytes() == BODY
    assert asyncio.run(_write(path, 0, BODY[::-1], None)) is False  # no pool at all
    assert path.read_bytes() == BODY[::-1]


def test_a_part_given_up_has_no_write_left_in_flight(tmp_path):
    """close() of an incomplete part returns only once every write it started is done: the whole
    buffers sent are in the file, the unfinished buffer is not."""
    path = _staging(tmp_path, SIZE)
    pool = DirectBuffers()
    asyncio.run(_write(path, 0, BODY, pool, complete=False))
    data = path.read_bytes()
    if _uncached_here(path):
        assert data[: 2 * BUFFER] == BODY[: 2 * BUFFER]
        assert data[2 * BUFFER :] == bytes(SIZE - 2 * BUFFER)
    else:
        assert data == BODY
