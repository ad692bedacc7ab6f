"""How scoreline logs: one JSON object per line for machines, readable lines for a terminal.

``configure`` is called once by the command line. When standard error is not a terminal
(a container, systemd, a pipe into a log shipper) every record becomes one JSON object per
line; on a terminal it stays a plain line. ``SCORELINE_LOG_FORMAT=json|text`` overrides the
guess. Fields passed with ``extra=`` (``request_id``, ``role``, ``shard``, …) become JSON keys,
so a line about one request carries its request id and can be joined with its result.

Hot paths never log per message at info level; per-request lines are warnings or errors
(a refused output, a poison request) and carry ``extra={"request_id": ...}``.

aiokafka logs every failed reconnect and fetch at ERROR, several times a second for as long
as a broker is down; :class:`RepeatFilter` lets the first of a kind through and then one per
``REPEAT_WINDOW_S``, carrying ``repeated`` (how many like it were held back).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import IO

import orjson

__all__ = ["configure", "JsonFormatter", "RepeatFilter", "REPEAT_WINDOW_S", "TEXT_FORMAT"]

REPEAT_WINDOW_S = 10.0
"""A third-party client's repeated message is logged at most once per this many seconds."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The terminal format (request ids and other extras are appended as ``key=value``)."""

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``msg``, the extras, and ``exc`` if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_extras(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=repr).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        return text + "".join(f" {k}={v}" for k, v in extras.items()) if extras else text


class RepeatFilter(logging.Filter):
    """Holds back a client library's repeats: the same logger and message at most once per ``window_s``."""

    def __init__(self, prefixes: tuple[str, ...] = ("aiokafka",), window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.prefixes, self.window_s = prefixes, window_s
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [last let through, held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.getMessage())
        seen = self._seen.get(key)
        if seen is not None and record.created - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.repeated = int(seen[1])  # held back since the last one let through
        if len(self._seen) > 1000:  # forget kinds not seen for a window
            self._seen = {k: v for k, v in self._seen.items() if record.created - v[0] < self.window_s}
        self._seen[key] = [record.created, 0]
        return True


def configure(level: str | int = "WARNING", *, stream: IO[str] | None = None, fmt: str | None = None) -> None:
    """Send every log record to ``stream`` (standard error), as JSON lines unless it is a terminal.

    ``fmt`` is ``json`` or ``text``; default ``SCORELINE_LOG_FORMAT``, else guessed from the stream.
    """
    stream = stream if stream is not None else sys.stderr
    fmt = (fmt or os.environ.get("SCORELINE_LOG_FORMAT") or "").lower()
    if fmt not in ("json", "text"):
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter(TEXT_FORMAT))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
