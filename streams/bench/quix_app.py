"""The Quix Streams peer: route-then-score written the way a Quix Streams user would.

Run as ``python -m streams.bench.quix_app BOOTSTRAP PREFIX {route|score|both}``; stops on SIGTERM or
SIGINT (``Application.run`` handles both). Quix Streams (``quixstreams`` 3.x, on confluent-kafka and
librdkafka) is what a team writing a Python Kafka stream processor today would likely pick; it is a
bench-only dependency (``pip install scoreline[bench]``), never something a worker needs.

Two applications, as a Quix user deploys them (``both`` runs the two dataframes in one application):

- **route**: ``app.dataframe(requests)``; ``sdf.apply`` decodes and checks the request with
  :func:`schemas.codec.decode_request` and decides with :func:`routing.route` (the same rules and
  code as scoreline's router); ``set_headers`` puts the decision in the headers; the original
  bytes go on with ``to_topic``, to the shard's topic the decision names (a topic callback),
  keyed as they came (by the user id). A request that cannot be routed goes to the dead-letter topic.
- **score**: one dataframe per shard topic; ``sdf.apply(..., metadata=True)`` decodes the request,
  scores it with the model the headers name (``registry.get(model).score_batch([item])``: Quix
  processes a message at a time) and returns the result, which ``to_topic`` writes to the reply
  topic keyed by the request id, JSON-encoded by Quix's own serializer (orjson).

Settings, each set the way Quix's documentation presents it for throughput at low latency:

- ``processing_guarantee="at-least-once"`` (the default; as every pipeline of the bench).
- ``commit_interval=1.0``: Quix commits every 5 s by default; scoreline commits every batch and
  faust every 0.5 s. One second keeps a restart's replay short at a negligible cost (a commit is
  one round trip a second).
- ``consumer_extra_config``: ``fetch.wait.max.ms=5`` (librdkafka's 500 ms default would add up
  to half a second per hop at low load; 5 ms is the load generator's; scoreline's service
  consumers wait up to 50 ms, ``transport.kafka.aiokafka_consumer``),
  ``fetch.min.bytes=1``, ``queued.max.messages.kbytes`` left at its default (64 MB of prefetch).
- ``producer_extra_config``: ``linger.ms=2`` (librdkafka's default is 5; 2 is ``KafkaSettings``'
  default and faust's; scoreline's service producers and the load generator use 0, since they
  hand the producer whole batches), ``batch.size`` 512 KiB (as theirs), ``compression.type=none``
  (as theirs); Quix's producer is idempotent with ``acks=all`` already.
- ``consumer_poll_timeout=0.1``: how long ``run`` blocks for a message when idle (1 s by default);
  it only matters for shutdown, not throughput.
- ``auto_create_topics=False`` and ``use_changelog_topics=False``: the bench creates the topics,
  and nothing here keeps state.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from quixstreams import Application

from routing import RequestView, RoutingError, extract_shard_key, route
from schemas import codec
from schemas import headers as H
from schemas.errors import InvalidMessage
from schemas.messages import Status
from streams.bench.layout import bench_layout, bench_model, bench_rules
from workflows import Item, ModelRegistry

__all__ = ["build_app"]

_DEADLETTER = "\x00deadletter"


def build_app(bootstrap: str, prefix: str, roles: str) -> Application:
    """The Quix application for one bench run: ``route``, ``score`` or ``both``."""
    layout, rules = bench_layout(prefix), bench_rules(prefix, bench_model())
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"{prefix}quix-{roles}",
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        commit_interval=1.0,
        consumer_extra_config={"fetch.wait.max.ms": 5, "fetch.min.bytes": 1},
        producer_extra_config={"linger.ms": 2, "batch.size": 512 * 1024, "compression.type": "none"},
        consumer_poll_timeout=0.1,
        auto_create_topics=False,
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    if roles in ("route", "both"):
        _route(app, layout, rules)
    if roles in ("score", "both"):
        _score(app, layout, rules)
    if roles not in ("route", "score", "both"):
        raise ValueError(f"unknown roles {roles!r}; use route, score or both")
    return app


def _route(app: Application, layout: Any, rules: Any) -> None:
    requests = app.topic(layout.requests, key_deserializer="bytes", value_deserializer="bytes")
    outputs = {shard: app.topic(layout.shard(shard), key_serializer="bytes", value_serializer="bytes")
               for shard in rules.shards}
    outputs[_DEADLETTER] = app.topic(layout.deadletter, key_serializer="bytes", value_serializer="bytes")

    def decide(raw: bytes) -> dict[str, Any]:
        try:
            request = codec.decode_request(raw)
            shard_key = extract_shard_key(request.context, rules.shard_key_path(request.objective))
            decision = route(RequestView(request.request_id, request.objective, request.client, request.reply_to,
                                         shard_key, request.context, request.model), rules)
        except (InvalidMessage, RoutingError) as exc:
            return {"raw": str(exc).encode(), "headers": [(H.SHARD, _DEADLETTER.encode())]}
        return {"raw": raw, "headers": [
            (H.SHARD, decision.shard.encode()), (H.MODEL, decision.model.encode()),
            (H.CELL, (decision.cell or "").encode()), (H.RULES_VERSION, str(decision.rules_version).encode()),
            (H.ROUTED_AT, str(int(time.time() * 1000)).encode())]}

    def shard_topic(value: bytes, key: Any, timestamp: int, headers: Any) -> Any:
        return outputs[headers[0][1].decode()]  # the decision's first header names the shard

    sdf = app.dataframe(requests)
    sdf = sdf.apply(decide)
    sdf = sdf.set_headers(lambda value, key, timestamp, headers: value["headers"])
    sdf = sdf.apply(lambda value: value["raw"])
    sdf.to_topic(shard_topic)


def _score(app: Application, layout: Any, rules: Any) -> None:
    registry = ModelRegistry.default()
    replies = {name: app.topic(name, key_serializer="str", value_serializer="json")
               for client in rules.clients.values() for name in client.reply_topics if not name.endswith("*")}

    def score(raw: bytes, key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
        request = codec.decode_request(raw)
        said = dict(headers)
        model_id = said[H.MODEL].decode()
        began = time.perf_counter()
        (outcome,) = registry.get(model_id).score_batch([Item(request.context, request.payload)])
        return {"request_id": request.request_id, "objective": request.objective,
                "status": Status.OK if outcome.error is None else Status.ERROR, "model": model_id,
                "cell": said[H.CELL].decode() or None, "rules_version": int(said[H.RULES_VERSION]),
                "shard": rules.shard_of(model_id), "result": outcome.value,
                "error": dataclasses.asdict(outcome.error) if outcome.error is not None else None,
                "timings_ms": {"scored": round((time.perf_counter() - began) * 1000, 3)},
                "traffic": request.traffic, "reply_to": request.reply_to}

    def reply_topic(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> Any:
        reply_to = value.pop("reply_to")  # where it goes, not part of the result
        topic = replies.get(reply_to)
        if topic is None:  # a pattern's topic: declared on first use
            topic = replies[reply_to] = app.topic(reply_to, key_serializer="str", value_serializer="json")
        return topic

    for shard in rules.shards:
        work = app.topic(layout.shard(shard), key_deserializer="bytes", value_deserializer="bytes")
        sdf = app.dataframe(work)
        sdf = sdf.apply(score, metadata=True)
        sdf.to_topic(reply_topic, key=lambda value: value["request_id"])


if __name__ == "__main__":
    bootstrap, prefix, roles = sys.argv[1:4]
    build_app(bootstrap, prefix, roles).run()
