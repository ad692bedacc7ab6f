"""The repository's record format, without a broker: deterministic archives, chunks, keys, safe unpacking."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from streams.repository.records import CHUNK_BYTES, Head, chunk_key, chunks_of, pack, parse_key, unpack
from workflows import package_sha256
from workflows.skeleton import new_package


def test_the_archive_is_the_same_bytes_for_the_same_package_and_unpacks_to_it(tmp_path):
    package = new_package(tmp_path / "a", "echo@v1", "echo")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "workflow.cpython-311.pyc").write_bytes(b"cache")
    archive = pack(package)
    os.utime(package / "workflow.py", (0, 0))  # times are not part of the archive
    assert pack(package) == archive
    unpacked = unpack(archive, tmp_path / "b", "echo@v1")
    assert package_sha256(unpacked) == package_sha256(package)
    assert not (unpacked / "__pycache__").exists()


def test_chunks_cover_the_archive_in_order_each_with_its_digest():
    archive = os.urandom(CHUNK_BYTES * 2 + 10)
    chunks = chunks_of(archive)
    assert [len(c) for c, _ in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 10]
    assert b"".join(c for c, _ in chunks) == archive and all(len(d) == 64 for _, d in chunks)


def test_keys_tell_a_head_from_a_chunk():
    assert parse_key("echo@v1") == ("echo@v1", None)
    assert parse_key(chunk_key("echo@v1", 12)) == ("echo@v1", 12)


def test_an_archive_entry_outside_the_package_is_refused(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("echo@v1/../../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="is not a file of echo@v1/"):
        unpack(buffer.getvalue(), tmp_path / "out", "echo@v1")
    assert not (tmp_path / "escape.txt").exists()


def test_a_head_that_is_not_one_is_a_value_error():
    with pytest.raises(ValueError, match="not a model head record"):
        Head.decode(b'{"id": "x"}')
