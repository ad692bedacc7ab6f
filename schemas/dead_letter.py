"""Dead-letter records: what a rejected input becomes, with its bytes and headers kept."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.errors import ScorelineError
from schemas.messages import DeadLetter

__all__ = ["dead_letter_for"]


def dead_letter_for(
    exc: ScorelineError,
    *,
    stage: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    original: bytes | None,
    headers: Mapping[str, str | bytes] | Iterable[tuple[str, bytes | None]],
    ts_ms: int,
) -> DeadLetter:
    """Build the dead-letter record for an input rejected with ``exc``.

    Args:
        exc: why the input was rejected; usually an :class:`InvalidMessage`,
            whose ``field`` and ``partial`` are carried over.
        stage: one of :class:`~schemas.messages.Stage`.
        source_topic: the topic the input was read from.
        source_partition: its partition.
        source_offset: its offset.
        original: the input's value bytes (None for a tombstone).
        headers: the input's headers, as a mapping or as Kafka's
            ``(name, bytes)`` pairs; bytes are decoded as UTF-8.
        ts_ms: epoch milliseconds to stamp the record with.
    """
    partial: Mapping[str, Any] = getattr(exc, "partial", None) or {}
    request_id = partial.get("request_id")
    client = partial.get("client")
    return DeadLetter(
        code=exc.code,
        message=getattr(exc, "message", None) or str(exc),
        field=getattr(exc, "field", None),
        request_id=request_id if type(request_id) is str else None,
        client=client if type(client) is str else None,
        stage=stage,
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        ts_ms=ts_ms,
        original_b64=base64.b64encode(original or b"").decode("ascii"),
        original_headers=_header_strings(headers),
    )


def _header_strings(
    headers: Mapping[str, str | bytes] | Iterable[tuple[str, bytes | None]],
) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        if value is None:
            value = ""
        elif not isinstance(value, str):
            # A poison record's headers may be as broken as its body; keep
            # what can be read rather than lose the record.
            value = bytes(value).decode("utf-8", errors="replace")
        out[name] = value
    return out
