"""The routing agent: requests in, routed work out, one decision per request.

The router is stateless; any number of router processes share the request topics in one
consumer group. For a request that carries the contract's headers it routes without
parsing the body (also when the objective's rules match on context fields, if the client
sent those fields as ``scoreline-context-*`` headers); for a plain request
(kcat, any producer) it parses the body. It forwards the original bytes, adding the
decision as headers, keyed and partitioned by the shard key.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator

from routing import Decision, RequestView, RoutingError, Rules, extract_shard_key, partition_for
from routing import route as route_request
from schemas import codec
from schemas import headers as H
from schemas.errors import ErrorCode, InvalidMessage
from schemas.json_body import partial_of_request
from schemas.messages import Result, Stage, Status, Traffic
from streams.ops.tracing import trace_headers
from streams.services.balance import LagPoller, PartitionLoad
from streams.services.batch import BatchService
from streams.services.tenancy import ClientRateLimiter, RequestSource, request_topic_pattern, source_of
from streams.topics import TopicLayout
from streams.transport.headers import headers_checked, to_headers
from streams.transport.outbox import Outbox
from streams.transport.protocols import Batch, Record, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["Router"]

# Headers a client sets that name the request; the router routes from these alone.
_ROUTING_HEADERS = frozenset((H.REQUEST_ID, H.OBJECTIVE, H.CLIENT, H.REPLY_TO))
# Headers the router owns: a client cannot smuggle a decision past it.
_DECISION_HEADERS = frozenset(H.DECISION_HEADERS)
# Headers a forward carries with the decision's values: the router's own and the ones it re-states.
_REWRITTEN = _DECISION_HEADERS | {H.REQUEST_ID, H.OBJECTIVE, H.CLIENT, H.REPLY_TO, H.TRAFFIC, H.SHARD_KEY}


class Router(BatchService):
    """Consumes the live and backfill request topics and routes every request to a shard topic."""

    role = "router"
    stage = Stage.ROUTER

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, rules: Callable[[], Rules], *,
                 max_request_bytes: int = codec.DEFAULT_MAX_REQUEST_BYTES, group_id: str | None = None,
                 trust_client_field: bool = True, transport: Transport | None = None,
                 worker_group: Callable[[str], str] | None = None, balance: bool = True) -> None:
        super().__init__(kafka, layout, group_id=group_id or f"{layout.prefix}router",
                         topics=[layout.requests, layout.requests_backfill], transport=transport)
        # The shared request topics and every client's own ones (see streams.services.tenancy).
        self.pattern = request_topic_pattern(layout)
        self.rules = rules
        self.max_request_bytes = max_request_bytes
        self.trust_client_field = trust_client_field
        """Whether a request on a shared topic may name its own client; off where clients have own topics."""
        self._limiter = ClientRateLimiter()
        self.load = PartitionLoad()
        """Work waiting per partition of the shard and shadow topics: where keyless requests go."""
        self.worker_group = worker_group or (lambda s: layout.shadow_group if s == "shadow" else layout.worker_group(s))
        """Shard name (``shadow`` for the shadow topic) -> the consumer group that works it."""
        self._lag = LagPoller(self.transport.lag_reader(self.role), self.load, self._lag_targets) if balance else None
        self.routed = 0
        self.parsed_bodies = 0

    async def start(self) -> None:
        """Join the request topics' group, then start reading the workers' lag (for keyless requests)."""
        await super().start()
        if self._lag is not None:
            await self._lag.start()

    async def stop(self) -> None:
        """Stop reading lag, then finish the batch in hand and disconnect."""
        if self._lag is not None:
            await self._lag.stop()
        await super().stop()

    def _lag_targets(self) -> Iterator[tuple[str, str, int]]:
        """The live shard topics and the shadow topic whose partition counts are known: (group, topic, count)."""
        rules = self.rules()
        for shard in (*rules.shards, "shadow"):
            topic = self.layout.shadow if shard == "shadow" else self.layout.shard(shard)
            count = self._partitions.get(topic)
            if count is not None and count > 1:
                yield self.worker_group(shard), topic, count

    async def handle(self, batch: Batch, outbox: Outbox) -> None:
        rules = self.rules()  # one snapshot per batch: a reload never splits a batch
        now_ms = str(int(time.time() * 1000)).encode()
        # Partition counts are looked up once per batch, so routing a record never waits.
        for shard in rules.shards:
            await self.partition_count(self.layout.shard(shard))
        if any(o.shadow for o in rules.objectives.values()):
            await self.partition_count(self.layout.shadow)
        for tp, records in batch.items():
            source = source_of(self.layout, tp.topic)
            for record in records:
                rejected = self._route_one(record, source, rules, now_ms, outbox)
                if rejected is not None:
                    await self._reject(record, *rejected, rules, outbox)

    def _route_one(self, record: Record, source: RequestSource, rules: Rules, now_ms: bytes,
                   outbox: Outbox) -> tuple[InvalidMessage, dict[str, str]] | None:
        """Route one record onto ``outbox``; return why and its headers if it must be rejected instead."""
        headers, verbatim = headers_checked(record.headers)
        traffic = headers.get(H.TRAFFIC) or source.traffic
        value = record.value or b""
        try:
            if len(value) > self.max_request_bytes:
                raise InvalidMessage(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"request is {len(value)} bytes; the limit is {self.max_request_bytes}",
                    partial=_partial_from_headers(headers))
            view, traffic = self._view(value, headers, rules, traffic)
            self._check_identity(view, source.client)
            decision = _route(view, rules)
            if not self._limiter.admit(rules.clients[view.client], time.monotonic()):
                raise InvalidMessage(ErrorCode.RATE_LIMITED,
                                     f"client {view.client!r} is over its limit of "
                                     f"{rules.clients[view.client].rate_limit_rps:g} requests/s", field="client",
                                     partial=_partial_of_view(view))
        except InvalidMessage as exc:
            return exc, headers
        self._forward(record, headers, verbatim, view, decision, traffic, now_ms, rules.context_fields(view.objective),
                      outbox)
        return None

    def _view(self, value: bytes, headers: dict[str, str], rules: Rules,
              traffic: str) -> tuple[RequestView, str]:
        objective = headers.get(H.OBJECTIVE)
        # Routed from headers only when they name the request as the body must (an id of 1 to 200
        # characters); otherwise the body decides, and its decoder says what is wrong.
        if (objective is not None and objective in rules.objectives and headers.keys() >= _ROUTING_HEADERS
                and 0 < len(headers[H.REQUEST_ID]) <= codec.MAX_REQUEST_ID_LENGTH):
            fields = rules.context_fields(objective)
            context = _context_from_headers(headers, fields) if fields else None
            if not fields or context is not None:
                return RequestView(
                    request_id=headers[H.REQUEST_ID], objective=objective, client=headers[H.CLIENT],
                    reply_to=headers[H.REPLY_TO], shard_key=headers.get(H.SHARD_KEY) or None,
                    context=context, model=headers.get(H.MODEL_OVERRIDE) or None,
                ), traffic
        self.parsed_bodies += 1
        request = codec.decode_request(value, max_bytes=self.max_request_bytes)
        if request.objective not in rules.objectives:
            raise InvalidMessage(ErrorCode.UNKNOWN_OBJECTIVE, f"unknown objective {request.objective!r}",
                                 field="objective", partial=partial_of_request(request))
        shard_key = extract_shard_key(request.context, rules.shard_key_path(request.objective))
        view = RequestView(request_id=request.request_id, objective=request.objective, client=request.client,
                           reply_to=request.reply_to, shard_key=shard_key, context=request.context,
                           model=request.model)
        return view, headers.get(H.TRAFFIC) or request.traffic

    def _check_identity(self, view: RequestView, topic_client: str | None) -> None:
        """On a client's own topic the topic is the identity; on a shared one, the setting decides."""
        if topic_client is not None:
            if view.client != topic_client:
                # Error replies go only where the topic's own client may receive them.
                raise InvalidMessage(ErrorCode.IDENTITY_MISMATCH,
                                     f"a request on {topic_client!r}'s own topic names client {view.client!r}",
                                     field="client", partial={**_partial_of_view(view), "client": topic_client})
        elif not self.trust_client_field:
            raise InvalidMessage(ErrorCode.UNTRUSTED_CLIENT,
                                 f"requests on the shared topic are not trusted to name their client; publish "
                                 f"to {self.layout.client_requests(view.client)} instead", field="client",
                                 partial={"request_id": view.request_id})

    def _forward(self, record: Record, headers: dict[str, str], verbatim: bool, view: RequestView,
                 decision: Decision, traffic: str, now_ms: bytes, context_fields: frozenset[str],
                 outbox: Outbox) -> None:
        # The client's other headers pass through as they came (no decode and re-encode), unless a
        # value is missing or not UTF-8: then they go through the same replacing decoder as before.
        passed = _passed_through(record.headers, headers, verbatim, _not_passed(context_fields))
        key = decision.shard_key.encode() if decision.shard_key is not None else None
        # The decision's headers, written straight as the list the record batch takes (no dict between).
        decided = [
            (H.REQUEST_ID, view.request_id.encode()), (H.OBJECTIVE, view.objective.encode()),
            (H.CLIENT, view.client.encode()), (H.REPLY_TO, view.reply_to.encode()), (H.TRAFFIC, traffic.encode()),
            (H.MODEL, decision.model.encode()), (H.SHARD, decision.shard.encode()),
            (H.RULES_VERSION, str(decision.rules_version).encode()), (H.ROUTED_AT, now_ms)]
        if key is not None:
            decided.append((H.SHARD_KEY, key))
        if decision.cell is not None:
            decided.append((H.CELL, decision.cell.encode()))
        if decision.shadows:
            decided.append((H.SHADOWS, ",".join(decision.shadows).encode()))
        topic = self.layout.shard(decision.shard, traffic)
        outbox.put(topic, record.value, key=key, partition=self._partition(topic, decision.shard_key),
                   headers=passed + decided, timestamp_ms=record.timestamp, tag=record)
        for candidate in decision.shadows:
            # The same decision for the candidate: its model, no shard (shadow workers serve every model).
            shadow_headers = [(name, candidate.encode() if name == H.MODEL else value)
                              for name, value in decided if name != H.SHARD]
            shadow_headers += [(H.ROLE, b"shadow"), (H.PRIMARY_MODEL, decision.model.encode())]
            outbox.put(self.layout.shadow, record.value, key=key,
                       partition=self._partition(self.layout.shadow, decision.shard_key),
                       headers=passed + shadow_headers, timestamp_ms=record.timestamp, tag=record)
        self.routed += 1
        self.metrics.routed(view.objective, decision.model, decision.cell, traffic, decision.shadows)

    def _partition(self, topic: str, shard_key: str | None) -> int | None:
        count = self._partitions.get(topic)  # looked up at the start of the batch
        if count is None:
            # Not looked up (backfill work): the outbox places it by the same key hash, or spreads it.
            return None
        if shard_key is None:
            # No shard key: no locality to keep, so the less loaded of two partitions (streams.services.balance).
            return self.load.pick(topic, count)
        partition = _partition_for(shard_key, count)
        self.load.sent(topic, partition)
        return partition

    async def _reject(self, record: Record, exc: InvalidMessage, headers: dict[str, str], rules: Rules,
                      outbox: Outbox) -> None:
        await self.dead_letter(outbox, record, exc)
        partial = exc.partial or {}
        client, reply_to, request_id = partial.get("client"), partial.get("reply_to"), partial.get("request_id")
        if not (client and reply_to and request_id) or not rules.reply_allowed(client, reply_to):
            return  # no reply topic this client may use: the dead letter is the only trace
        result = Result(request_id=request_id, objective=partial.get("objective"), status=Status.ERROR,
                        error=exc.to_error_info(), rules_version=rules.version,
                        traffic=partial.get("traffic") or Traffic.LIVE)
        await outbox.add(reply_to, codec.encode(result), key=request_id.encode(),
                         partition=await self.reply_partition(reply_to, headers), headers=trace_headers(headers))


# Users recur from batch to batch; remembering their partition saves a pure-Python murmur2 each time.
_partition_for = functools.lru_cache(maxsize=1 << 16)(partition_for)


@functools.lru_cache(maxsize=64)
def _not_passed(context_fields: frozenset[str]) -> frozenset[str]:
    """The headers a forward does not copy from the request, for an objective matching on ``context_fields``.

    The decision's own, and the context headers routing does not read: the worker checks every
    context header it gets against the body, so only the ones that can steer routing travel on.
    """
    return _REWRITTEN | {h for f, h in H.CONTEXT_HEADERS.items() if f not in context_fields}


def _passed_through(raw, headers: dict[str, str], verbatim: bool, dropped: frozenset[str]) -> list[tuple[str, bytes]]:
    """The record's headers less ``dropped``, in order, once each (``verbatim``: see ``headers_checked``)."""
    if not raw:
        return []
    if verbatim:
        return [h for h in raw if h[0] not in dropped]
    # Repeated names (last one wins) or values the decoder replaced: what headers_checked made of them.
    return to_headers({k: v for k, v in headers.items() if k not in dropped})


def _context_from_headers(headers: dict[str, str], fields: frozenset[str]) -> dict[str, str] | None:
    """The context fields routing matches on, from the ``scoreline-context-*`` headers; None if any is missing.

    Only with the shard-key header too: routing then reads nothing the headers do not carry.
    The worker checks every context header against the body (``header_mismatch``), so a header
    cannot route a request as one context and have it scored as another.
    """
    if not headers.get(H.SHARD_KEY):
        return None
    context = {}
    for field in fields:
        value = headers.get(H.CONTEXT_HEADERS.get(field, ""))
        if value is None:
            return None
        context[field] = value
    return context


def _route(view: RequestView, rules: Rules) -> Decision:
    try:
        return route_request(view, rules)
    except RoutingError as exc:
        raise InvalidMessage(exc.code, exc.message, field=exc.field, partial=_partial_of_view(view)) from None


def _partial_from_headers(headers: dict[str, str]) -> dict[str, str]:
    names = {H.REQUEST_ID: "request_id", H.CLIENT: "client", H.REPLY_TO: "reply_to", H.OBJECTIVE: "objective",
             H.TRAFFIC: "traffic"}
    return {field: headers[h] for h, field in names.items() if h in headers}


def _partial_of_view(view: RequestView) -> dict[str, str]:
    return {"request_id": view.request_id, "client": view.client, "reply_to": view.reply_to,
            "objective": view.objective}


