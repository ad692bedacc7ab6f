"""W3C trace context: a producer's traceparent comes back on the reply, shadow records and dead letters."""

from __future__ import annotations

import uuid

import orjson
import pytest

from schemas import codec
from schemas import headers as H
from streams.ops.tracing import TRACESTATE, trace_headers, trace_id
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.headers import headers_of
from streams.transport.kafka import aiokafka_producer
from streams.transport.tail import TopicTail


def test_trace_headers_carry_traceparent_and_tracestate_only():
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_headers({H.TRACEPARENT: parent, TRACESTATE: "k=v", H.MODEL: "m"}) == [
        (H.TRACEPARENT, parent.encode()), (TRACESTATE, b"k=v")]
    assert trace_headers({H.MODEL: "m"}) is None


@pytest.mark.parametrize("value, expected", [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", None),
    ("00-xyz-00f067aa0ba902b7-01", None),
    ("garbage", None),
    (None, None),
])
def test_trace_id(value, expected):
    assert trace_id(value) == expected


def _traceparent() -> tuple[str, str]:
    trace = uuid.uuid4().hex
    return trace, f"00-{trace}-{uuid.uuid4().hex[:16]}-01"


@pytest.mark.kafka
async def test_a_traced_request_yields_a_reply_shadow_records_and_dead_letters_in_the_same_trace(
        kafka, layout, shadow_all_rules, registry):
    good_trace, good_parent = _traceparent()
    bad_trace, bad_parent = _traceparent()
    body = {"request_id": f"traced-{good_trace[:8]}", "objective": "title-ranking", "client": "demo",
            "reply_to": layout.replies("demo"), "context": {"user_id": "u-7", "country": "US"},
            "payload": {"titles": ["t-1", "t-2", "t-3"]}}
    async with Pipeline(kafka, layout, shadow_all_rules, registry, PipelineOptions(follow_rules=False)) as pipeline:
        await pipeline.wait_ready()
        async with TopicTail(kafka, [layout.replies("demo")]) as replies, \
                TopicTail(kafka, [layout.shadow_results, layout.deadletter]) as sidecar:
            producer = aiokafka_producer(kafka, "test-trace")
            await producer.start()
            try:
                await producer.send_and_wait(layout.requests, orjson.dumps(body), headers=[
                    (H.TRACEPARENT, good_parent.encode()), (TRACESTATE, b"vendor=1")])
                await producer.send_and_wait(layout.requests, b"{not json", headers=[
                    (H.TRACEPARENT, bad_parent.encode())])
            finally:
                await producer.stop()
            assert await replies.wait_for(lambda: len(replies.records) >= 1, timeout=30)
            assert await sidecar.wait_for(lambda: len(sidecar.records) >= 3, timeout=30)

    (reply,) = replies.records
    assert codec.decode_result(reply.value).request_id == body["request_id"]
    reply_headers = headers_of(reply.headers)
    assert trace_id(reply_headers[H.TRACEPARENT]) == good_trace
    assert reply_headers[TRACESTATE] == "vendor=1"
    by_topic: dict[str, list[dict[str, str]]] = {}
    for record in sidecar.records:
        by_topic.setdefault(record.topic, []).append(headers_of(record.headers))
    sides = by_topic[layout.shadow_results]
    assert len(sides) == 2  # the primary side and the shadow side
    assert {trace_id(h.get(H.TRACEPARENT)) for h in sides} == {good_trace}
    (letter,) = by_topic[layout.deadletter]
    assert trace_id(letter.get(H.TRACEPARENT)) == bad_trace
