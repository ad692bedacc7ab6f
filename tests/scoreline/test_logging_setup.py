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


def test_a_client_librarys_repeats_are_held_back_and_counted():
    stream = io.StringIO()
    logging_setup.configure("INFO", stream=stream, fmt="json")
    kafka, ours = logging.getLogger("aiokafka.client"), logging.getLogger("streams.services.worker")
    for _ in range(50):  # a broker down: aiokafka logs every reconnect
        kafka.error("Unable connect to node with id %d", 1)
        ours.warning("still waiting")
    kafka.error("Unable connect to node with id %d", 2)  # another message is news
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines if line["logger"] == "aiokafka.client"] == [
        "Unable connect to node with id 1", "Unable connect to node with id 2"]
    assert sum(line["logger"] == "streams.services.worker" for line in lines) == 50  # ours are never held back


def test_a_repeat_after_the_window_says_how_many_were_held_back():
    flt = logging_setup.RepeatFilter(window_s=10.0)

    def record(at: float) -> logging.LogRecord:
        r = logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Failed fetch messages from %d", (3,), None)
        r.created = at
        return r

    assert flt.filter(record(100.0))
    assert not any(flt.filter(record(100.0 + i)) for i in range(1, 10))
    later = record(111.0)
    assert flt.filter(later) and later.repeated == 9
