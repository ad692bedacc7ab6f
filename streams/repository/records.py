"""What the model repository topic holds: a package as a tar archive in chunks, and a head record naming them.

Per published ``name@version`` (single partition, compacted)::

    key  <id>\\x00chunk\\x00<i>   value  bytes i of the archive      header scoreline-chunk-sha256
    key  <id>                      value  the head (JSON), written last: id, sha256, size, chunks, manifest

The head is written only after every chunk is acknowledged, so a head always names chunks
that exist; a tombstone (null value) on every key retires the version. The archive is
deterministic (sorted paths, no times, owners or caches), and ``sha256`` is the package's own
digest (``workflows.package_sha256``), checked again after unpacking: what a worker loads is
byte for byte what was published.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from workflows.loading import package_files

__all__ = ["CHUNK_BYTES", "CHUNK_SHA_HEADER", "Head", "chunk_key", "chunks_of", "pack", "parse_key", "unpack"]

CHUNK_BYTES = 512 * 1024
"""Archive bytes per chunk record: well under the broker's default message size limit (1 MiB)."""

CHUNK_SHA_HEADER = "scoreline-chunk-sha256"

_SEPARATOR = "\x00chunk\x00"


@dataclass(frozen=True)
class Head:
    """A published package version: what it is and how many chunks carry it."""

    id: str
    "``name@version``: also the record key."
    sha256: str
    "The package's digest (``workflows.package_sha256``)."
    size: int
    "Archive bytes."
    chunks: int
    "How many chunk records carry the archive."
    archive_sha256: str
    "sha256 of the whole archive."
    published_at_ms: int
    published_by: str
    manifest: dict[str, Any]
    "The package's manifest, for listing without pulling."

    def encode(self) -> bytes:
        """The head record's value."""
        return orjson.dumps(self.__dict__)

    @classmethod
    def decode(cls, value: bytes) -> Head:
        """A head from its record value; ``ValueError`` if it is not one."""
        try:
            doc = orjson.loads(value)
            return cls(**{k: doc[k] for k in cls.__dataclass_fields__})
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a model head record: {exc}") from exc


def chunk_key(model_id: str, index: int) -> str:
    """The key of chunk ``index`` of ``model_id``."""
    return f"{model_id}{_SEPARATOR}{index:06d}"


def parse_key(key: str) -> tuple[str, int | None]:
    """``(model id, chunk index)`` of a record key; the index is None for a head."""
    model_id, sep, index = key.partition(_SEPARATOR)
    return (model_id, int(index)) if sep else (model_id, None)


def pack(directory: Path) -> bytes:
    """The package as a deterministic tar archive (paths under ``<id>/``, no times or owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in package_files(directory):
            info = tarfile.TarInfo(f"{directory.name}/{path.relative_to(directory).as_posix()}")
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def chunks_of(archive: bytes) -> list[tuple[bytes, str]]:
    """The archive cut into chunks, each with its sha256."""
    parts = [archive[i:i + CHUNK_BYTES] for i in range(0, len(archive), CHUNK_BYTES)] or [b""]
    return [(part, hashlib.sha256(part).hexdigest()) for part in parts]


def unpack(archive: bytes, target: Path, model_id: str) -> Path:
    """Unpack into ``target`` (a fresh directory); return ``target/<model_id>``. Refuses paths outside it."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            outside = not parts or parts[0] != model_id or ".." in parts or Path(member.name).is_absolute()
            if not member.isfile() or outside:
                raise ValueError(f"archive entry {member.name!r} is not a file of {model_id}/")
        tar.extractall(target, filter="data")
    return target / model_id
