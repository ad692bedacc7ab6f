"""The faust-streaming baseline: route-then-score written the way a faust user would.

Run as ``python -m streams.bench.faust_app BOOTSTRAP PREFIX {per-event|take}``; stops on
SIGTERM/SIGINT (faust's own worker signal handling).

Two agents in one worker process, as a faust user deploys a small app:

- ``route``: ``async for event in stream.events()``, decode and validate the request with
  :func:`schemas.codec.decode_request`, decide with :func:`routing.route`, and
  ``await topic.send(...)`` the original bytes to the shard's topic with the decision in
  headers (the same hand-off scoreline's router makes).
- ``score``: per event, ``registry.get(model).score_batch([item])`` and ``await send`` of
  the encoded :class:`~schemas.messages.Result` to the request's ``reply_to``; in the
  ``take`` variant, ``stream.take_events(500, within=0.005)`` (``take`` over events, which
  keeps the headers) and one ``score_batch`` per model per batch -- faust at its best.

Settings are tuned for throughput the way a faust maintainer would suggest, and each is
explained where it is set. Values are raw bytes encoded with orjson by the same codec
scoreline uses, so serialisation costs the same on both sides.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict

import faust

from routing import RequestView, RoutingError, extract_shard_key, route
from schemas import codec
from schemas import headers as H
from schemas.errors import InvalidMessage
from schemas.messages import Result, Status
from streams.bench.layout import bench_layout, bench_rules
from workflows import Item, ModelRegistry

__all__ = ["build_app"]

TAKE_MAX = 500
"Largest batch the ``take`` variant scores at once (scoreline's batches are up to 1000)."
TAKE_WITHIN_S = 0.005
"How long ``take`` waits to fill a batch: a few milliseconds, like a producer linger."


def build_app(bootstrap: str, prefix: str, variant: str, datadir: str) -> faust.App:
    """The faust app for one bench run; ``variant`` is ``per-event`` or ``take``; ``datadir`` is faust's scratch."""
    layout = bench_layout(prefix)
    rules = bench_rules(prefix)
    registry = ModelRegistry.default()
    app = faust.App(
        f"{prefix}faust",  # the app id prefixes faust's own topics, so the bench cleanup finds them
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,  # no web views: nothing else competes for the event loop
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=4,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        # At-least-once, as scoreline: offsets are committed for acked events. Commit more often
        # than the 2.8 s default so a restart replays less; the cost is one request per interval.
        processing_guarantee="at_least_once",
        broker_commit_interval=0.5,
        broker_commit_every=5000,
        # Bigger fetches and a deeper per-partition buffer keep the agents fed under saturation.
        broker_max_poll_records=1000,
        stream_buffer_maxsize=16384,
        # The producer: acks from all replicas and the same linger and batch size as scoreline's.
        producer_acks=-1,
        producer_linger=0.002,
        producer_max_batch_size=512 * 1024,
        # Group membership: the same timeouts as scoreline's consumers, so a rebalance costs the same.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=20.0,
        stream_wait_empty=False,  # on shutdown, do not wait to drain buffers (the bench already drained)
    )
    requests = app.topic(layout.requests)
    shards = {shard: app.topic(layout.shard(shard)) for shard in rules.shards}
    work = app.topic(*(layout.shard(shard) for shard in rules.shards))
    deadletter = app.topic(layout.deadletter)
    reply_topics: dict[str, faust.TopicT] = {}

    def reply_topic(name: str) -> faust.TopicT:
        topic = reply_topics.get(name)
        if topic is None:
            topic = reply_topics[name] = app.topic(name)
        return topic

    @app.agent(requests)
    async def route_requests(stream):
        async for event in stream.events():
            try:
                request = codec.decode_request(event.value)
                shard_key = extract_shard_key(request.context, rules.shard_key_path(request.objective))
                decision = route(RequestView(request.request_id, request.objective, request.client,
                                             request.reply_to, shard_key, request.context, request.model), rules)
            except (InvalidMessage, RoutingError) as exc:
                await deadletter.send(value=str(exc).encode())
                continue
            headers = {H.MODEL: decision.model.encode(), H.CELL: (decision.cell or "").encode(),
                       H.RULES_VERSION: str(decision.rules_version).encode(),
                       H.ROUTED_AT: str(int(time.time() * 1000)).encode()}
            key = decision.shard_key.encode() if decision.shard_key is not None else None
            await shards[decision.shard].send(key=key, value=event.value, headers=headers)

    def result_of(event, request, model_id: str, outcome, scored_ms: float) -> Result:
        headers = event.headers
        return Result(request_id=request.request_id, objective=request.objective,
                      status=Status.OK if outcome.error is None else Status.ERROR, model=model_id,
                      cell=headers.get(H.CELL, b"").decode() or None,
                      rules_version=int(headers[H.RULES_VERSION]), shard=rules.shard_of(model_id),
                      result=outcome.value, error=outcome.error,
                      timings_ms={"scored": round(scored_ms, 3)}, traffic=request.traffic)

    if variant == "per-event":
        @app.agent(work)
        async def score(stream):
            async for event in stream.events():
                request = codec.decode_request(event.value)
                model_id = event.headers[H.MODEL].decode()
                began = time.perf_counter()
                (outcome,) = registry.get(model_id).score_batch([Item(request.context, request.payload)])
                result = result_of(event, request, model_id, outcome, (time.perf_counter() - began) * 1000)
                await reply_topic(request.reply_to).send(key=request.request_id.encode(),
                                                         value=codec.encode(result))
    elif variant == "take":
        @app.agent(work)
        async def score_batches(stream):
            async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
                by_model = defaultdict(list)
                for event in events:
                    by_model[event.headers[H.MODEL].decode()].append((event, codec.decode_request(event.value)))
                for model_id, rows in by_model.items():
                    began = time.perf_counter()
                    outcomes = registry.get(model_id).score_batch([Item(r.context, r.payload) for _, r in rows])
                    scored_ms = (time.perf_counter() - began) * 1000
                    for (event, request), outcome in zip(rows, outcomes):
                        result = result_of(event, request, model_id, outcome, scored_ms)
                        await reply_topic(request.reply_to).send(key=request.request_id.encode(),
                                                                 value=codec.encode(result))
    else:
        raise ValueError(f"unknown faust variant {variant!r}; use per-event or take")
    return app


if __name__ == "__main__":
    bootstrap, prefix, variant = sys.argv[1:4]
    with tempfile.TemporaryDirectory(prefix=f"{prefix}faust-") as scratch:
        faust_app = build_app(bootstrap, prefix, variant, scratch)
        faust.Worker(faust_app, loglevel="WARNING", quiet=True).execute_from_commandline()
