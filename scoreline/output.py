"""How commands talk to people and programs: one JSON object on stdout with ``--json``,
progress and logs on stderr."""

from __future__ import annotations

import sys
from typing import Any

import orjson


def emit_json(obj: Any) -> None:
    """Print exactly one JSON object on standard output."""
    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """A progress line on standard error."""
    print(message, file=sys.stderr, flush=True)
