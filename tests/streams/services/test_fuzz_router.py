"""The router's header fast path and body path on fuzzed records, and the worker behind it.

No broker: a ``Router`` (and a ``Worker``) is built but never started, and its batches are
handed straight to ``handle`` with a recording double of :class:`streams.transport.outbox.Outbox`.
Whatever the record, the router must produce exactly one of: a forward to a shard topic, or
a dead letter (plus at most one error reply, only on a reply topic the client may use). A
forward that the worker then cannot trust (headers that disagree with the body) must end as
a ``header_mismatch`` dead letter and error reply — never as a result scored for the header's
objective or client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from streams_testing import rules_under

from schemas import codec
from schemas import headers as H
from schemas.errors import ErrorCode
from schemas.messages import Status
from streams.services.router import Router
from streams.services.worker import Worker
from streams.topics import TopicLayout
from streams.transport.settings import KafkaSettings
from workflows import ModelRegistry, sample_items

LAYOUT = TopicLayout(prefix="fuzz.", request_partitions=2, shard_partitions=2, reply_partitions=2)
RULES = rules_under(LAYOUT)
REGISTRY = ModelRegistry.default()
for _model in REGISTRY.ids():  # loaded ahead, as a running worker's are: one handle() scores what it is given
    REGISTRY.get(_model)
KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected: nothing here is started
CODES = {v for k, v in vars(ErrorCode).items() if k.isupper() and isinstance(v, str)}
REPLY_TO = LAYOUT.replies("demo")


class RecordingOutbox:
    """A test double of ``Outbox``: records every ``add`` instead of producing it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def put(self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None,
            headers: list[tuple[str, bytes]] | None = None, timestamp_ms: int | None = None, tag: Any = None) -> None:
        self.sent.append(dict(topic=topic, value=value, key=key, partition=partition, headers=headers or [],
                              timestamp_ms=timestamp_ms))

    async def add(self, topic: str, value: bytes, **options: Any) -> None:
        self.put(topic, value, **options)

    def to(self, predicate) -> list[dict[str, Any]]:
        return [s for s in self.sent if predicate(s["topic"])]


class _AnyTopicHasTwoPartitions(dict):
    # The partition counts a started service would ask the broker for; every topic here has two.
    def get(self, key, default=None):  # noqa: D102
        return 2

    def __missing__(self, key):
        return 2


def _unstarted(service):
    service._partitions = _AnyTopicHasTwoPartitions()
    return service


def make_router() -> Router:
    return _unstarted(Router(KAFKA, LAYOUT, lambda: RULES))


def make_worker(shard: str) -> Worker:
    return _unstarted(Worker(KAFKA, LAYOUT, REGISTRY, shard=shard))


def record(value: bytes | None, headers: list[tuple[str, bytes]], topic: str = LAYOUT.requests,
           offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(topic=topic, partition=0, offset=offset, timestamp=1_700_000_000_000, timestamp_type=0,
                          key=None, value=value, checksum=None, serialized_key_size=-1,
                          serialized_value_size=len(value or b""), headers=tuple(headers))


def route(rec: ConsumerRecord) -> RecordingOutbox:
    outbox = RecordingOutbox()
    asyncio.run(make_router().handle({TopicPartition(rec.topic, 0): [rec]}, outbox))
    return outbox


def is_shard(topic: str) -> bool:
    return topic.startswith(LAYOUT.prefix + "shard.")


def assert_one_outcome(rec: ConsumerRecord, outbox: RecordingOutbox) -> str:
    """Exactly one forward, or exactly one dead letter (+ at most one reply); return which."""
    forwards = outbox.to(is_shard)
    dead = outbox.to(lambda t: t == LAYOUT.deadletter)
    shadows = outbox.to(lambda t: t == LAYOUT.shadow)
    replies = outbox.to(lambda t: not is_shard(t) and t not in (LAYOUT.deadletter, LAYOUT.shadow))
    if forwards:
        assert len(forwards) == 1 and not dead and not replies, outbox.sent
        assert forwards[0]["value"] == rec.value  # the original bytes, untouched
        return "forward"
    assert len(dead) == 1 and not shadows and len(replies) <= 1, outbox.sent
    letter = codec.decode_dead_letter(dead[0]["value"])
    assert letter.code in CODES
    for reply in replies:
        result = codec.decode_result(reply["value"])
        assert result.status == Status.ERROR and result.error.code == letter.code
        assert RULES.reply_allowed(letter.client or "", reply["topic"])  # never write where a client may not
    return letter.code


# -- strategies --------------------------------------------------------------------------------

VALID = {
    "request_id": "r-1", "objective": "title-ranking", "client": "demo", "reply_to": REPLY_TO,
    "context": {"user_id": "u-1", "country": "US"}, "payload": {"titles": ["t-1", "t-2"]},
    "deadline_ms": None, "traffic": "live", "model": None,
}
HEADER_NAMES = [H.REQUEST_ID, H.OBJECTIVE, H.CLIENT, H.REPLY_TO, H.SHARD_KEY, H.REPLY_PARTITION, H.TRAFFIC,
                H.MODEL_OVERRIDE, H.MODEL, H.SHARD, H.CELL, H.SHADOWS, H.RULES_VERSION, H.CONTEXT_COUNTRY,
                H.CONTEXT_DEVICE, H.CONTEXT_SURFACE]
header_values = st.one_of(
    st.sampled_from(["r-1", "title-ranking", "fraud-score", "nope", "demo", "other", REPLY_TO,
                     "scoreline.replies.other", "0", "1", "99", "-1", "live", "backfill", "test", "",
                     "title-ranking@v1", "s1", "s2", "US", "CA", "BR", "tv"]).map(str.encode),
    st.binary(max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["valid-ish", "bytes", "truncated", "deep", "huge", "bad-utf8"]))
    body = dict(VALID)
    for name in list(body):
        fate = draw(st.integers(0, 9))
        if fate == 8:
            del body[name]
        elif fate == 9:
            body[name] = draw(json_values)
    data = orjson.dumps(body)
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        return data[:-1] + b',"context":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    if kind == "huge":
        return orjson.dumps({**body, "request_id": "x" * draw(st.sampled_from([300, 70_000, 300_000]))})
    if kind == "bad-utf8":
        return data.replace(b"u-1", b"u-\xff\xfe", 1)
    return data


@st.composite
def records(draw) -> ConsumerRecord:
    value = draw(st.none() | bodies())
    headers: list[tuple[str, bytes]] = []
    if draw(st.booleans()):  # the client library's headers, mostly agreeing with the body
        headers = [(H.REQUEST_ID, b"r-1"), (H.OBJECTIVE, b"title-ranking"), (H.CLIENT, b"demo"),
                   (H.REPLY_TO, REPLY_TO.encode()), (H.SHARD_KEY, b"u-1")]
    for _ in range(draw(st.integers(0, 4))):
        headers.append((draw(st.sampled_from(HEADER_NAMES)), draw(header_values)))
    topic = draw(st.sampled_from([LAYOUT.requests, LAYOUT.requests_backfill]))
    return record(value, headers, topic=topic)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(records())
def test_every_record_is_forwarded_or_dead_lettered(rec):
    assert_one_outcome(rec, route(rec))


@FUZZ
@given(records())
# Found by this test: a repeated request-id header whose last value is empty was routed, and the
# worker could not answer a request without an id.
@example(record(None, [(H.REQUEST_ID, b"r-1"), (H.OBJECTIVE, b"title-ranking"), (H.CLIENT, b"demo"),
                       (H.REPLY_TO, REPLY_TO.encode()), (H.SHARD_KEY, b"u-1"), (H.CONTEXT_COUNTRY, b"r-1"),
                       (H.REQUEST_ID, b"")]))
def test_every_forward_the_worker_receives_ends_as_a_result_or_a_dead_letter(rec):
    """Router then worker: each input ends as exactly one result, or a dead letter (+ maybe an error reply)."""
    routed = route(rec)
    if assert_one_outcome(rec, routed) != "forward":
        return
    (forward,) = routed.to(is_shard)
    shard = dict(forward["headers"])[H.SHARD].decode()
    work = record(forward["value"], forward["headers"], topic=forward["topic"])
    outbox = RecordingOutbox()
    asyncio.run(make_worker(shard).handle({TopicPartition(work.topic, 0): [work]}, outbox))
    replies = outbox.to(lambda t: t not in (LAYOUT.deadletter, LAYOUT.shadow_results))
    dead = outbox.to(lambda t: t == LAYOUT.deadletter)
    assert len(replies) == 1, outbox.sent
    result = codec.decode_result(replies[0]["value"])
    if dead:
        assert len(dead) == 1 and result.status == Status.ERROR
        assert codec.decode_dead_letter(dead[0]["value"]).code == result.error.code
    else:
        assert result.status in (Status.OK, Status.ERROR, Status.EXPIRED)
    assert RULES.reply_allowed("demo", replies[0]["topic"])


def _request(objective: str, **overrides: Any) -> tuple[dict, dict[str, bytes]]:
    """A valid body for ``objective`` and the headers the client library would set for it."""
    item = sample_items(objective, 1, seed=3)[0]
    body = {**VALID, "objective": objective, "context": dict(item.context), "payload": dict(item.payload)}
    headers = {H.REQUEST_ID: b"r-1", H.OBJECTIVE: objective.encode(), H.CLIENT: b"demo",
               H.REPLY_TO: REPLY_TO.encode(), H.SHARD_KEY: item.context["user_id"].encode()}
    headers.update(overrides)
    return body, headers


def _route_then_work(body: dict, headers: dict[str, bytes]) -> tuple[RecordingOutbox, RecordingOutbox | None]:
    rec = record(orjson.dumps(body), list(headers.items()))
    routed = route(rec)
    if assert_one_outcome(rec, routed) != "forward":
        return routed, None
    (forward,) = routed.to(is_shard)
    work = record(forward["value"], forward["headers"], topic=forward["topic"])
    worked = RecordingOutbox()
    shard = dict(forward["headers"])[H.SHARD].decode()
    asyncio.run(make_worker(shard).handle({TopicPartition(work.topic, 0): [work]}, worked))
    return routed, worked


def _never_scored_as_the_header_says(body: dict, headers: dict[str, bytes], header: str, field: str) -> str:
    """Route and score a request whose ``header`` disagrees with the body's ``field``; return what happened.

    Either the router read the body (its rules for the body's objective match on context) and
    routed by the body, rewriting the headers; or it routed by the headers (fast path) and the
    worker rejected the record with ``header_mismatch``. Never is a result scored under the
    header's claim.
    """
    routed, worked = _route_then_work(body, headers)
    if worked is None:
        return "rejected by the router"
    letters = [codec.decode_dead_letter(s["value"]) for s in worked.to(lambda t: t == LAYOUT.deadletter)]
    results = [codec.decode_result(s["value"]) for s in worked.to(
        lambda t: t not in (LAYOUT.deadletter, LAYOUT.shadow_results))]
    assert len(results) == 1
    if letters:
        assert [(x.code, x.field) for x in letters] == [(ErrorCode.HEADER_MISMATCH, field)]
        assert results[0].status == Status.ERROR and results[0].error.code == ErrorCode.HEADER_MISMATCH
        return "header_mismatch at the worker"
    (forward,) = routed.to(is_shard)
    assert dict(forward["headers"])[header].decode() == body[field]  # routed by the body, headers rewritten
    assert results[0].status == Status.OK and results[0].objective == body["objective"]
    assert results[0].request_id == body["request_id"]
    return "routed by the body"


@pytest.mark.parametrize("body_objective,header_objective,expected", [
    # fraud-score's rules do not match on context: the router trusts the headers, the worker catches the lie.
    ("title-ranking", "fraud-score", "header_mismatch at the worker"),
    # title-ranking's rules match on context: the router parses the body and routes by it.
    ("fraud-score", "title-ranking", "routed by the body"),
])
def test_an_objective_header_that_disagrees_with_the_body_is_never_scored(body_objective, header_objective,
                                                                          expected):
    body, headers = _request(body_objective, **{H.OBJECTIVE: header_objective.encode()})
    assert _never_scored_as_the_header_says(body, headers, H.OBJECTIVE, "objective") == expected


@pytest.mark.parametrize("objective", ["title-ranking", "fraud-score"])
@pytest.mark.parametrize("header,said,field", [
    (H.REQUEST_ID, b"r-other", "request_id"),
    (H.CLIENT, b"other", "client"),
    (H.REPLY_TO, LAYOUT.replies("other").encode(), "reply_to"),
])
def test_identity_headers_that_disagree_with_the_body_are_never_scored(objective, header, said, field):
    body, headers = _request(objective, **{header: said})
    assert _never_scored_as_the_header_says(body, headers, header, field) in (
        "rejected by the router", "header_mismatch at the worker", "routed by the body")


def _with_context_headers(body: dict, headers: dict[str, bytes]) -> dict[str, bytes]:
    """``headers`` plus the context headers the client library sets for ``body``."""
    return {**headers, **{header: str(body["context"][field]).encode()
                          for field, header in H.CONTEXT_HEADERS.items() if field in body["context"]}}


def _route_with(router: Router, body: dict, headers: dict[str, bytes]) -> RecordingOutbox:
    rec = record(orjson.dumps(body), list(headers.items()))
    outbox = RecordingOutbox()
    asyncio.run(router.handle({TopicPartition(rec.topic, 0): [rec]}, outbox))
    assert assert_one_outcome(rec, outbox) == "forward"
    return outbox


@pytest.mark.parametrize("country", ["US", "CA", "BR", "FR"])
def test_context_headers_route_a_context_matched_objective_as_the_body_would(country):
    """title-ranking's experiment matches on country: with the context headers the body is not parsed,
    and the decision (model, cell, shard, key) is the one the body route makes, for many users."""
    with_headers, body_only = make_router(), make_router()
    for item in sample_items("title-ranking", 40, seed=5):
        body, headers = _request("title-ranking")
        body["context"] = {**item.context, "country": country}
        headers[H.SHARD_KEY] = str(item.context["user_id"]).encode()
        fast = _route_with(with_headers, body, _with_context_headers(body, headers))
        slow = _route_with(body_only, body, headers)
        decided = (H.MODEL, H.CELL, H.SHARD, H.SHARD_KEY)
        assert [dict(fast.sent[0]["headers"]).get(h) for h in decided] == \
            [dict(slow.sent[0]["headers"]).get(h) for h in decided]
        assert fast.sent[0]["partition"] == slow.sent[0]["partition"]
    assert with_headers.parsed_bodies == 0
    assert body_only.parsed_bodies == 40


def test_without_every_matched_context_header_the_router_parses_the_body():
    router = make_router()
    body, headers = _request("title-ranking")
    headers = _with_context_headers(body, headers)
    _route_with(router, body, {k: v for k, v in headers.items() if k != H.CONTEXT_COUNTRY})
    _route_with(router, body, {k: v for k, v in headers.items() if k != H.SHARD_KEY})
    assert router.parsed_bodies == 2


@pytest.mark.parametrize("objective", ["title-ranking", "fraud-score"])
@pytest.mark.parametrize("header,field", [(H.CONTEXT_COUNTRY, "country"), (H.CONTEXT_DEVICE, "device"),
                                          (H.CONTEXT_SURFACE, "surface")])
def test_a_context_header_that_disagrees_with_the_body_is_never_scored(objective, header, field):
    """A client cannot be routed by a header country (say, into an experiment) and scored with another.

    A context header routing reads (title-ranking's country) travels on and the worker rejects the
    disagreement; one routing does not read is not forwarded: the request is routed and scored as
    its body says, exactly as without the header.
    """
    body, headers = _request(objective)
    headers = _with_context_headers(body, headers)
    headers[header] = b"ZZ" if body["context"].get(field) != "ZZ" else b"YY"
    routed, worked = _route_then_work(body, headers)
    assert worked is not None
    letters = [codec.decode_dead_letter(s["value"]) for s in worked.to(lambda t: t == LAYOUT.deadletter)]
    results = [codec.decode_result(s["value"]) for s in worked.to(
        lambda t: t not in (LAYOUT.deadletter, LAYOUT.shadow_results))]
    assert len(results) == 1
    if field in RULES.context_fields(objective):
        assert [(x.code, x.field) for x in letters] == [(ErrorCode.HEADER_MISMATCH, f"context.{field}")]
        assert results[0].error.code == ErrorCode.HEADER_MISMATCH
    else:
        (forward,) = routed.to(is_shard)
        assert header not in dict(forward["headers"])
        assert not letters and results[0].status == Status.OK
        plain, _ = _route_then_work(body, {k: v for k, v in headers.items() if k != header})
        assert dict(plain.to(is_shard)[0]["headers"])[H.MODEL] == dict(forward["headers"])[H.MODEL]


def test_a_context_header_for_a_field_the_body_lacks_is_a_mismatch():
    body, headers = _request("title-ranking")
    body["context"] = {k: v for k, v in body["context"].items() if k != "country"}
    routed, worked = _route_then_work(body, {**headers, H.CONTEXT_COUNTRY: b"US"})
    letters = [codec.decode_dead_letter(s["value"]) for s in worked.to(lambda t: t == LAYOUT.deadletter)]
    assert [(x.code, x.field) for x in letters] == [(ErrorCode.HEADER_MISMATCH, "context.country")]


@pytest.mark.parametrize("value", [
    None, b"", b"\xff\xfe", b"[]", b"null", b"{" * 5000, b'{"request_id":' + b"[" * 5000,
    orjson.dumps({**VALID, "request_id": "x" * 300_000}),
])
def test_hostile_bodies_without_headers_are_dead_lettered_with_a_stable_code(value):
    rec = record(value, [])
    code = assert_one_outcome(rec, route(rec))
    assert code in CODES
    assert assert_one_outcome(rec, route(rec)) == code  # stable: the same input, the same code
