"""The client library against a real broker: concurrency, timeouts, shared reply topics, late replies."""

from __future__ import annotations

import asyncio

import pytest
from streams_testing import eventually

import streams
from schemas import codec
from schemas.errors import InvalidMessage
from schemas.messages import Result, Status
from streams import ClientClosed, ScoreClient, ScoreTimeout
from streams.client.score_client import choose_reply_partition
from streams.services.pipeline import Pipeline
from streams.transport.kafka import aiokafka_producer
from workflows import sample_items


def test_the_package_exports_the_client():
    assert {"ScoreClient", "ScoreTimeout", "ClientClosed"} <= set(streams.__all__)


def test_reply_partition_asked_env_or_random():
    assert choose_reply_partition([0, 1, 2, 3], 2, "1") == 2
    assert choose_reply_partition([0, 1, 2, 3], None, "5") == 1  # a pod ordinal, modulo the count
    assert choose_reply_partition([0, 1, 2, 3], None, None) in range(4)
    with pytest.raises(InvalidMessage) as err:
        choose_reply_partition([0, 1], 7, None)
    assert err.value.field == "reply_partition" and "0..1" in err.value.message
    with pytest.raises(InvalidMessage):
        choose_reply_partition([0, 1], None, "pod-3")


async def test_a_client_that_is_not_running_says_so():
    client = ScoreClient("127.0.0.1:1", "demo")
    with pytest.raises(ClientClosed, match="not running"):
        await client.score("title-ranking", {"user_id": "u-1"})


@pytest.mark.kafka
async def test_many_concurrent_calls_each_get_their_own_answer(kafka, layout, rules, registry):
    items = sample_items("title-ranking", 100, seed=3)
    async with Pipeline(kafka, layout, rules, registry) as pipeline:
        await pipeline.wait_ready()
        async with ScoreClient(kafka, "demo", layout=layout) as client:
            requests = [client.request("title-ranking", i.context, i.payload) for i in items]
            results = await asyncio.gather(*(client.score_request(r, timeout=30) for r in requests))
            assert client.in_flight == 0
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    assert {r.status for r in results} == {Status.OK}
    for request, result in zip(requests, results):
        # Each caller got the ranking of its own titles, not a neighbour's.
        assert {t["title"] for t in result.result["ranking"]} <= set(request.payload["titles"])
    assert client.delivered == 100 and client.foreign == 0


@pytest.mark.kafka
async def test_no_answer_raises_a_timeout_and_stop_fails_waiting_callers(kafka, layout):
    # No pipeline runs under this prefix: nothing will ever answer.
    async with ScoreClient(kafka, "demo", layout=layout) as client:
        with pytest.raises(ScoreTimeout, match="within 0.2s") as err:
            await client.score("title-ranking", {"user_id": "u-1"}, {"titles": ["t-1"]}, timeout=0.2)
        assert err.value.code == "timeout" and err.value.retriable
        waiting = asyncio.ensure_future(client.score("title-ranking", {"user_id": "u-2"}, timeout=60))
        assert await eventually(lambda: client.in_flight == 1)
    with pytest.raises(ClientClosed):
        await waiting
    with pytest.raises(ClientClosed):
        await client.submit("title-ranking", {"user_id": "u-3"})


@pytest.mark.kafka
async def test_two_instances_on_one_reply_topic_each_get_only_their_own(kafka, layout, rules, registry):
    items = sample_items("title-ranking", 40, seed=4)
    async with Pipeline(kafka, layout, rules, registry) as pipeline:
        await pipeline.wait_ready()
        async with ScoreClient(kafka, "demo", layout=layout, reply_partition=0) as a, \
                ScoreClient(kafka, "demo", layout=layout, reply_partition=1) as b, \
                ScoreClient(kafka, "demo", layout=layout, reply_partition=1) as c:
            assert a.reply_to == b.reply_to == c.reply_to
            asked = {x: [x.request("title-ranking", i.context, i.payload) for i in part]
                     for x, part in ((a, items[:20]), (b, items[20:30]), (c, items[30:]))}
            answers = await asyncio.gather(*(x.score_many(rs, timeout=30, return_exceptions=False)
                                             for x, rs in asked.items()))
            # b and c share partition 1: each reads the other's replies and drops them as foreign.
            assert await eventually(lambda: b.foreign == 10 and c.foreign == 10)
    for (x, requests), results in zip(asked.items(), answers):
        assert [r.request_id for r in results] == [r.request_id for r in requests]
        assert x.delivered == len(requests) and x.late_or_duplicate == 0
    assert a.foreign == 0  # a alone on partition 0 never saw another instance's reply


@pytest.mark.kafka
async def test_late_and_duplicate_replies_are_counted_never_delivered(kafka, layout):
    seen: list[Result] = []
    async with ScoreClient(kafka, "demo", layout=layout, reply_partition=0, on_reply=seen.append) as client:
        with pytest.raises(ScoreTimeout):
            await client.score("title-ranking", {"user_id": "u-1"}, request_id="late-1", timeout=0.1)
        producer = aiokafka_producer(kafka, "test-late")
        await producer.start()
        try:
            for request_id in ("late-1", "late-1", "someone-else"):
                reply = Result(request_id=request_id, objective="title-ranking", status=Status.OK)
                await producer.send_and_wait(client.reply_to, codec.encode(reply), partition=0)
        finally:
            await producer.stop()
        assert await eventually(lambda: len(seen) == 3)
    assert (client.late_or_duplicate, client.foreign, client.delivered) == (2, 1, 0)
    assert [r.request_id for r in seen] == ["late-1", "late-1", "someone-else"]


@pytest.mark.kafka
async def test_repeated_request_ids_are_refused_before_sending(kafka, layout):
    async with ScoreClient(kafka, "demo", layout=layout) as client:
        request = client.request("title-ranking", {"user_id": "u-1"}, request_id="same")
        with pytest.raises(InvalidMessage) as err:
            await client.score_many([request, request])
        assert err.value.field == "request_id" and client.in_flight == 0


@pytest.mark.kafka
async def test_max_in_flight_bounds_the_requests_awaiting_results(kafka, layout, rules, registry):
    from streams.services.pipeline import Pipeline, PipelineOptions

    async with Pipeline(kafka, layout, rules, registry, PipelineOptions(roles=("router", "worker"))) as pipeline:
        await pipeline.wait_ready()
        async with ScoreClient(kafka, "demo", layout=layout, max_in_flight=5) as client:
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, client.in_flight)
                    await asyncio.sleep(0)

            watcher = asyncio.create_task(watch())
            items = sample_items("title-ranking", 40, seed=9)
            results = await client.score_many([client.request("title-ranking", i.context, i.payload) for i in items],
                                              timeout=60, return_exceptions=False)
            watcher.cancel()
    assert [r.status for r in results] == ["ok"] * 40
    assert 1 <= peak <= 5
