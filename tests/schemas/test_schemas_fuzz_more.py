"""decode_request on hostile input: random bytes, truncation, deep nesting, huge strings, bad UTF-8, wrong types.

Zero crashes: only ``InvalidMessage`` escapes, always with a stable code from ``ErrorCode``,
the same code for the same input. Bounded (``max_examples``) so it runs in seconds.

Run as a script, the same property is fuzzed by atheris (coverage-guided) when installed:
``.venv/bin/python tests/schemas/test_schemas_fuzz_more.py -runs=100000``.
"""

from __future__ import annotations

import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import InvalidMessage, decode_request
from schemas.errors import ErrorCode

CODES = {v for k, v in vars(ErrorCode).items() if k.isupper() and isinstance(v, str)}
VALID = {
    "request_id": "r-1", "objective": "title-ranking", "client": "demo", "reply_to": "scoreline.replies.demo",
    "context": {"user_id": "u-1"}, "payload": {"titles": ["t-1"]}, "deadline_ms": 1764000000000,
    "traffic": "live", "model": None,
}
REQUIRED = ("request_id", "objective", "client", "reply_to", "context")
BOUNDED = settings(max_examples=200, deadline=None)


def classify(data: bytes, max_bytes: int = 256 * 1024) -> str:
    """``ok`` or the stable error code; anything else escaping is a crash and fails the test."""
    try:
        decode_request(data, max_bytes=max_bytes)
    except InvalidMessage as exc:
        assert exc.code in CODES, exc.code
        assert str(exc)  # a message for the dead letter
        return exc.code
    return "ok"


def stable(data: bytes, **kw) -> str:
    code = classify(data, **kw)
    assert classify(data, **kw) == code
    return code


@BOUNDED
@given(st.binary(max_size=512))
def test_random_bytes(data):
    stable(data)


@BOUNDED
@given(st.integers(min_value=0))
def test_every_truncation_of_a_valid_request_is_malformed_json(cut):
    data = orjson.dumps(VALID)
    cut %= len(data)
    assert stable(data[:cut]) == ErrorCode.MALFORMED_JSON


@pytest.mark.parametrize("depth", [10, 500, 2000, 100_000])
@pytest.mark.parametrize("where", ["top", "context", "payload"])
def test_deep_nesting(depth, where):
    nest = b'{"a":' * depth + b"1" + b"}" * depth
    if where == "top":
        data = b"[" * depth + b"]" * depth
    else:
        data = orjson.dumps(VALID)[:-1] + f',"{where}":'.encode() + nest + b"}"
    assert stable(data, max_bytes=1 << 30) in CODES | {"ok"}


@pytest.mark.parametrize("field", [*VALID])
@pytest.mark.parametrize("size", [1_000, 300_000])
def test_huge_strings(field, size):
    data = orjson.dumps({**VALID, field: "x" * size})
    assert stable(data) in CODES | {"ok"}
    if size > 256 * 1024:
        assert stable(data) == ErrorCode.PAYLOAD_TOO_LARGE  # never parsed


@BOUNDED
@given(st.binary(min_size=1, max_size=8).filter(lambda b: not _utf8(b)), st.sampled_from([*VALID]))
def test_invalid_utf8_anywhere_is_malformed_json(junk, field):
    body = orjson.dumps({**VALID, field: "@@"})
    data = body.replace(b"@@", junk.replace(b'"', b"").replace(b"\\", b""), 1)
    assert stable(data) in (ErrorCode.MALFORMED_JSON, "ok") or _utf8(data)


WRONG = [None, True, 0, -1, 1.5, "", "x", [], [1], {}, {"a": 1}, "BIG"]


def _with(field: str, value) -> bytes:
    data = orjson.dumps({**VALID, field: value})
    # An integer past 64 bits, which orjson will not write but a Java or Go producer might.
    return data.replace(b'"BIG"', b"1" + b"0" * 30) if value == "BIG" else data


@pytest.mark.parametrize("field", [*VALID])
@pytest.mark.parametrize("value", WRONG, ids=repr)
def test_every_field_with_every_json_type(field, value):
    data = _with(field, value)
    code = stable(data)
    if code in (ErrorCode.MISSING_FIELD, ErrorCode.WRONG_TYPE, ErrorCode.INVALID_VALUE):
        with pytest.raises(InvalidMessage) as caught:
            decode_request(data)
        assert (caught.value.field or "").startswith(field), (caught.value.field, field)  # names the field
    if field in REQUIRED and value is None:
        assert code == ErrorCode.MISSING_FIELD


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_atheris_finds_no_crash_in_a_short_session():
    """A bounded coverage-guided session (skipped where atheris has no wheel for this platform)."""
    pytest.importorskip("atheris")
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, __file__, "-runs=3000", "-max_len=4096", "-seed=1"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _atheris_main() -> None:  # pragma: no cover - a fuzzing session, not a test
    import atheris

    def one(data: bytes) -> None:
        classify(data)

    import inspect

    from schemas import codec

    # Coverage feedback over the decoder only (instrumenting everything loaded takes minutes).
    for obj in vars(codec).values():
        if inspect.isfunction(obj) and obj.__module__ == codec.__name__:
            atheris.instrument_func(obj)
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    _atheris_main()
