"""The producer-side client: publish scoring requests and await their results.

    async with ScoreClient("127.0.0.1:9092", client="homepage") as c:
        result = await c.score("title-ranking", context={"user_id": "u-1", "country": "US"},
                               payload={"titles": ["t-1", "t-2"]}, timeout=1.0)

Each instance reads one partition of its client's reply topic, assigned directly (no consumer
group, so instances coming and going cause no rebalance), and asks the workers to reply on
that partition with the ``scoreline-reply-partition`` header. Replies are matched by request
id; a late, duplicate or foreign reply is counted and dropped, never handed to another caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import OrderedDict
from typing import Any, Iterable, Mapping

from aiokafka import TopicPartition

from schemas import codec, headers as H
from schemas.errors import InvalidMessage, ScorelineError
from schemas.messages import Request, Result, Traffic
from streams.kafka import KafkaSettings, to_headers
from streams.topics import TopicLayout, ensure_topics, TopicSpec

__all__ = ["ScoreClient", "ScoreTimeout"]

log = logging.getLogger(__name__)


class ScoreTimeout(ScorelineError):
    """No result arrived within the timeout; the request may still be scored later."""

    code = "timeout"
    retriable = True

    def __init__(self, request_id: str, timeout: float) -> None:
        super().__init__(f"no result for request {request_id} within {timeout}s")
        self.request_id = request_id


class ScoreClient:
    """Publishes requests for one client and correlates the results by request id."""

    def __init__(self, bootstrap: str | KafkaSettings, client: str, *, reply_to: str | None = None,
                 layout: TopicLayout | None = None, reply_partition: int | None = None,
                 shard_key_field: str = "user_id") -> None:
        self.kafka = bootstrap if isinstance(bootstrap, KafkaSettings) else KafkaSettings.from_env(bootstrap)
        self.client = client
        self.layout = layout or TopicLayout()
        self.reply_to = reply_to or self.layout.replies(client)
        self.reply_partition = reply_partition
        self.shard_key_field = shard_key_field
        self._pending: dict[str, asyncio.Future[Result]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # recent ids, to tell late from foreign
        self._producer = None
        self._consumer = None
        self._reader: asyncio.Task | None = None
        self.late_or_duplicate = 0
        self.foreign = 0

    async def __aenter__(self) -> "ScoreClient":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, take a reply partition and start reading replies from now on."""
        await ensure_topics(self.kafka.bootstrap, [TopicSpec(self.reply_to, self.layout.reply_partitions)],
                            replication_factor=self.layout.replication_factor, **self.kafka.security)
        self._producer = self.kafka.producer(f"client-{self.client}")
        await self._producer.start()
        self._consumer = self.kafka.consumer(group_id=None, role=f"client-{self.client}", fetch_max_wait_ms=10)
        await self._consumer.start()
        partitions = sorted(await self._producer.partitions_for(self.reply_to))
        if self.reply_partition is None:
            self.reply_partition = random.choice(partitions)
        elif self.reply_partition not in partitions:
            raise ValueError(f"{self.reply_to} has no partition {self.reply_partition}")
        tp = TopicPartition(self.reply_to, self.reply_partition)
        self._consumer.assign([tp])
        await self._consumer.seek_to_end(tp)
        await self._consumer.position(tp)  # resolve "end" now, before any request is sent
        self._reader = asyncio.create_task(self._read_replies(), name=f"scoreline-client-{self.client}")

    async def stop(self) -> None:
        """Stop reading replies; callers still waiting get ``ScoreTimeout``-free cancellation."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for future in self._pending.values():
            future.cancel()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    def request(self, objective: str, context: Mapping[str, Any], payload: Mapping[str, Any] | None = None, *,
                request_id: str | None = None, deadline_ms: int | None = None, traffic: str = Traffic.LIVE,
                model: str | None = None) -> Request:
        """Build a request of this client (validated like the router validates it)."""
        return codec.request_from_dict({
            "request_id": request_id or uuid.uuid4().hex, "objective": objective, "client": self.client,
            "reply_to": self.reply_to, "context": dict(context), "payload": dict(payload or {}),
            "deadline_ms": deadline_ms, "traffic": traffic, "model": model,
        })

    async def submit(self, objective: str, context: Mapping[str, Any], payload: Mapping[str, Any] | None = None,
                     **options: Any) -> str:
        """Publish one request without waiting for its result; return its request id."""
        request = self.request(objective, context, payload, **options)
        await self._send(request)
        return request.request_id

    async def score(self, objective: str, context: Mapping[str, Any], payload: Mapping[str, Any] | None = None, *,
                    timeout: float = 1.0, **options: Any) -> Result:
        """Publish one request and return its result; raise ``ScoreTimeout`` if none comes in time."""
        return await self.score_request(self.request(objective, context, payload, **options), timeout=timeout)

    async def score_request(self, request: Request, *, timeout: float = 1.0) -> Result:
        """Publish a request built with ``request`` and return its result."""
        future = self._expect(request.request_id)
        await self._send(request)
        return await self._await(request.request_id, future, timeout)

    async def score_many(self, requests: Iterable[Request], *, timeout: float = 5.0,
                         return_exceptions: bool = True) -> list[Result | ScoreTimeout]:
        """Publish many requests at once and gather their results, in order."""
        requests = list(requests)
        futures = [self._expect(r.request_id) for r in requests]
        sends = [await self._producer.send(*self._record(r)) for r in requests]
        await asyncio.gather(*sends)
        return await asyncio.gather(*(self._await(r.request_id, f, timeout) for r, f in zip(requests, futures)),
                                    return_exceptions=return_exceptions)

    def _expect(self, request_id: str) -> asyncio.Future[Result]:
        if request_id in self._pending:
            raise InvalidMessage("duplicate_request_id", f"request {request_id} is already in flight",
                                 field="request_id")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        return future

    async def _await(self, request_id: str, future: asyncio.Future[Result], timeout: float) -> Result:
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ScoreTimeout(request_id, timeout) from None
        finally:
            self._pending.pop(request_id, None)
            self._remember(request_id)

    def _record(self, request: Request) -> tuple:
        shard_key = request.context.get(self.shard_key_field)
        headers = to_headers({
            H.REQUEST_ID: request.request_id, H.OBJECTIVE: request.objective, H.CLIENT: request.client,
            H.REPLY_TO: request.reply_to, H.TRAFFIC: request.traffic, H.MODEL_OVERRIDE: request.model,
            H.SHARD_KEY: str(shard_key) if shard_key is not None else None,
            H.REPLY_PARTITION: str(self.reply_partition),
        })
        topic = self.layout.requests_backfill if request.traffic == Traffic.BACKFILL else self.layout.requests
        key = str(shard_key).encode() if shard_key is not None else None
        return topic, codec.encode_request(request), key, None, None, headers

    async def _send(self, request: Request) -> None:
        topic, value, key, partition, timestamp, headers = self._record(request)
        await self._producer.send(topic, value, key=key, headers=headers)

    def _remember(self, request_id: str) -> None:
        self._finished[request_id] = None
        if len(self._finished) > 100_000:
            self._finished.popitem(last=False)

    async def _read_replies(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    self._deliver(record.value)

    def _deliver(self, value: bytes) -> None:
        try:
            result = codec.decode_result(value)
        except InvalidMessage:
            log.warning("unreadable reply on %s dropped", self.reply_to)
            return
        future = self._pending.get(result.request_id)
        if future is not None and not future.done():
            future.set_result(result)
        elif future is not None or result.request_id in self._finished:
            self.late_or_duplicate += 1
        else:
            self.foreign += 1  # another instance's reply on a shared partition


def now_ms() -> int:
    """Epoch milliseconds, for deadlines."""
    return int(time.time() * 1000)
