"""Structured logs: JSON lines off a terminal, request ids carried as keys (pure)."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from scoreline import logging_setup


@pytest.fixture(autouse=True)
def _restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_when_not_a_terminal():
    stream = io.StringIO()
    logging_setup.configure("INFO", stream=stream)
    logging.getLogger("streams.services.worker").warning("output of %s refused", "t:0@5", extra={"request_id": "r-1"})
    line = orjson.loads(stream.getvalue().splitlines()[0])
    assert line["level"] == "WARNING" and line["logger"] == "streams.services.worker"
    assert line["msg"] == "output of t:0@5 refused" and line["request_id"] == "r-1"
    assert line["ts"].endswith("+00:00")


def test_exceptions_are_one_line_of_json():
    stream = io.StringIO()
    logging_setup.configure("INFO", stream=stream, fmt="json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("batch failed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in orjson.loads(line)["exc"]


def test_text_format_appends_extras_and_honours_the_level():
    stream = io.StringIO()
    logging_setup.configure("WARNING", stream=stream, fmt="text")
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").error("shown", extra={"request_id": "r-2"})
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().rstrip().endswith("shown request_id=r-2")
