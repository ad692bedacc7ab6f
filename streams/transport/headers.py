"""Kafka record headers as scoreline reads and writes them: decoded once, written from dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["Headers", "headers_checked", "headers_of", "to_headers"]

Headers = list[tuple[str, bytes]]
"""Headers as a producer takes them."""

RawHeaders = Sequence[tuple[str, bytes]] | None
"""Headers as a consumed record carries them (aiokafka gives a tuple of pairs)."""


def headers_of(raw: RawHeaders) -> dict[str, str]:
    """A record's headers as a dict of strings (last value wins; undecodable values replaced)."""
    return headers_checked(raw)[0]


def headers_checked(raw: RawHeaders) -> tuple[dict[str, str], bool]:
    """:func:`headers_of`, and whether it is exactly ``raw``: names once each, every value present and UTF-8.

    Then ``raw`` itself can be passed on instead of re-encoding the dict (the router's forward).
    """
    if not raw:
        return {}, True
    try:  # the common case, on every record of the hot path: every value present and valid UTF-8
        decoded = {k: v.decode() for k, v in raw}
    except (AttributeError, UnicodeDecodeError):
        return {k: v.decode("utf-8", "replace") if v is not None else "" for k, v in raw}, False
    return decoded, len(decoded) == len(raw)


def to_headers(values: Mapping[str, str | None]) -> Headers:
    """Kafka headers from a dict, leaving out None values."""
    return [(k, v.encode()) for k, v in values.items() if v is not None]
