"""The producer-side client: publish scoring requests and await their results.

    async with ScoreClient("127.0.0.1:9092", client="homepage") as c:
        result = await c.score("title-ranking", context={"user_id": "u-1", "country": "US"},
                               payload={"titles": ["t-1", "t-2"]}, timeout=1.0)

Each instance reads one partition of its client's reply topic, assigned directly (no consumer
group, so instances coming and going cause no rebalance), and asks the workers to reply on
that partition with the ``scoreline-reply-partition`` header. Replies are matched by request
id; a late, duplicate or foreign reply is counted and dropped, never handed to another caller.

Which partition an instance reads: ``reply_partition=`` if given, else
``SCORELINE_REPLY_PARTITION`` (e.g. a pod ordinal; taken modulo the partition count), else
one chosen at random. Instances sharing a partition still only see their own answers; they
merely read (and drop) each other's.

The exception tree of this module (all under ``ScorelineError``)::

    ScoreTimeout     no result within the timeout            timeout         retriable
    ClientClosed     the client stopped (or was never started) client_closed
    KafkaUnavailable the request could not be published       kafka_unavailable retriable
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from schemas import codec
from schemas.errors import ErrorCode, InvalidMessage, ScorelineError
from schemas.messages import Request, Result, Traffic
from streams.client.records import request_record
from streams.errors import KafkaUnavailable
from streams.topics import TopicLayout, TopicSpec
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import KafkaError, Producer, Reader, TopicPartition, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["ClientClosed", "ScoreClient", "ScoreTimeout", "now_ms"]

log = logging.getLogger(__name__)

REPLY_PARTITION_ENV = "SCORELINE_REPLY_PARTITION"
_REMEMBERED_IDS = 100_000  # finished ids kept to tell a late reply from a foreign one


class ScoreTimeout(ScorelineError):
    """No result arrived within the timeout; the request may still be scored later."""

    code = "timeout"
    retriable = True

    def __init__(self, request_id: str, timeout: float) -> None:
        super().__init__(f"no result for request {request_id} within {timeout}s")
        self.request_id = request_id
        self.timeout = timeout


class ClientClosed(ScorelineError):
    """The client was stopped (or not started) while a caller needed it; the result will not be read."""

    code = "client_closed"

    def __init__(self, request_id: str | None = None) -> None:
        what = f"request {request_id}" if request_id else "the call"
        super().__init__(f"ScoreClient is not running: {what} has no one to read its result "
                         f"(use `async with ScoreClient(...)` or call start())")
        self.request_id = request_id


class ScoreClient:
    """Publishes requests for one client and correlates the results by request id.

    Args:
        bootstrap: the cluster address, or ready-made :class:`KafkaSettings`.
        client: the calling service, as named in the routing rules.
        reply_to: the reply topic (default ``<prefix>replies.<client>``).
        layout: topic names (default prefix ``scoreline.``).
        reply_partition: the partition of ``reply_to`` this instance reads; see the module doc.
        shard_key_field: the context field copied into the shard-key header and record key.
        on_reply: called with every result no waiting caller claimed: results of ``submit``,
            late or duplicate results, other instances' results on a shared partition.
        max_in_flight: at most this many awaited requests (``score``, ``score_many``) at once; more
            wait for a slot before they are published. None: unbounded. ``submit`` is not counted.
        own_topic: publish to this client's own request topic, ``<prefix>requests.<client>``, where
            the topic (writable by this client alone under ACLs) is the client's identity.
        transport: how it reaches Kafka (default: aiokafka with ``bootstrap``'s settings);
            :class:`~streams.transport.memory.MemoryTransport` for tests without a broker.
    """

    def __init__(self, bootstrap: str | KafkaSettings, client: str, *, reply_to: str | None = None,
                 layout: TopicLayout | None = None, reply_partition: int | None = None,
                 shard_key_field: str = "user_id", on_reply: Callable[[Result], None] | None = None,
                 own_topic: bool = False, max_in_flight: int | None = None,
                 transport: Transport | None = None) -> None:
        self.kafka = bootstrap if isinstance(bootstrap, KafkaSettings) else KafkaSettings.from_env(bootstrap)
        self.transport = transport if transport is not None else KafkaTransport(self.kafka)
        self.client = client
        self.layout = layout or TopicLayout()
        self.reply_to = reply_to or self.layout.replies(client)
        self.reply_partition = reply_partition
        self.shard_key_field = shard_key_field
        self.on_reply = on_reply
        self.own_topic = own_topic
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self._pending: dict[str, asyncio.Future[Result]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._producer: Producer | None = None
        self._consumer: Reader | None = None
        self._reader: asyncio.Task[None] | None = None
        self._running = False
        self.delivered = 0
        """Results handed to the caller that awaited them."""
        self.late_or_duplicate = 0
        """Results for a request of this instance that nobody awaits any more (timed out or answered)."""
        self.foreign = 0
        """Results for requests this instance does not know (another instance's, or ``submit``'s)."""
        self.send_failures = 0
        """Fire-and-forget requests the broker refused (``submit``)."""

    async def __aenter__(self) -> ScoreClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def in_flight(self) -> int:
        """Requests published by ``score``/``score_many`` whose result has not arrived yet."""
        return sum(not future.done() for future in self._pending.values())

    async def start(self) -> None:
        """Connect, take a reply partition and start reading replies from now on."""
        await self.transport.ensure_topics([TopicSpec(self.reply_to, self.layout.reply_partitions)],
                                           replication_factor=self.layout.replication_factor)
        # No lingering and short fetch waits: a caller waits for each request's round trip.
        self._producer = producer = self.transport.producer(f"client-{self.client}")
        await producer.start()
        self._consumer = consumer = self.transport.reader(f"client-{self.client}", fetch_wait_ms=10)
        try:
            await consumer.start()
            partitions = sorted(await producer.partitions_for(self.reply_to))
            self.reply_partition = choose_reply_partition(partitions, self.reply_partition,
                                                          os.environ.get(REPLY_PARTITION_ENV))
            tp = TopicPartition(self.reply_to, self.reply_partition)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            await consumer.position(tp)  # resolve "end" now, before any request is sent
        except BaseException:
            await consumer.stop()
            await producer.stop()
            raise
        self._running = True
        self._reader = asyncio.create_task(self._read_replies(consumer), name=f"scoreline-client-{self.client}")

    async def stop(self, *, drain: float = 0.0) -> None:
        """Flush what was published, stop reading, and fail callers still waiting with ``ClientClosed``.

        With ``drain`` > 0, first wait up to that many seconds for in-flight results.
        """
        if drain > 0 and self._pending and self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pending.values(), return_exceptions=True), drain)
        self._running = False
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._fail_pending(ClientClosed)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()  # flushes fire-and-forget requests first

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
        """Publish one request without waiting for its result; return its request id.

        The result arrives on the reply topic like any other; pass ``on_reply`` to see it.
        """
        request = self.request(objective, context, payload, **options)
        await self.submit_request(request)
        return request.request_id

    async def submit_request(self, request: Request) -> asyncio.Future:
        """Publish a built request without waiting for its result; return the broker's acknowledgement future.

        The record is only queued; ``stop`` flushes it. A refused record is counted in ``send_failures``.
        """
        self._check_running(request.request_id)
        ack = await self._enqueue(request)
        ack.add_done_callback(self._count_failure)
        return ack

    async def score(self, objective: str, context: Mapping[str, Any], payload: Mapping[str, Any] | None = None, *,
                    timeout: float = 1.0, **options: Any) -> Result:
        """Publish one request and return its result; raise ``ScoreTimeout`` if none comes in time."""
        return await self.score_request(self.request(objective, context, payload, **options), timeout=timeout)

    async def score_request(self, request: Request, *, timeout: float = 1.0) -> Result:
        """Publish a request built with ``request`` and return its result.

        Raises:
            ScoreTimeout: no result within ``timeout`` seconds (counted from the call).
            ClientClosed: the client is not running, or stopped while the caller waited.
            KafkaUnavailable: the broker did not take the request.
        """
        (result,) = await self.score_many([request], timeout=timeout, return_exceptions=False)
        if isinstance(result, ScorelineError):  # not with return_exceptions=False: it was raised
            raise result
        return result

    async def score_many(self, requests: Iterable[Request], *, timeout: float = 5.0,
                         return_exceptions: bool = True) -> list[Result | ScorelineError]:
        """Publish many requests in one go and gather their results, in order.

        Every record is queued before any acknowledgement is awaited, so the producer sends
        them in a few batches. One deadline, ``timeout`` seconds from the call, covers them all.
        With ``return_exceptions`` a request that failed is a ``ScoreTimeout`` (or
        ``ClientClosed``) in its place; otherwise the first failure is raised.
        """
        requests = list(requests)
        ids = [r.request_id for r in requests]
        self._check_running(ids[0] if ids else None)
        if len(set(ids)) != len(ids) or any(i in self._pending for i in ids):
            raise InvalidMessage(ErrorCode.INVALID_VALUE, "a request id is repeated or already in flight",
                                 field="request_id")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Each request is registered as it is published: a result cannot come sooner.
        futures = [loop.create_future() for _ in ids]
        try:
            acks = []
            for request, future in zip(requests, futures):
                if self._slots is not None:
                    # A slot per awaited request, given back when its future settles or is given up.
                    await self._slots.acquire()
                    future.add_done_callback(self._free_slot)
                self._pending[request.request_id] = future
                acks.append(await self._enqueue(request))
            await asyncio.gather(*acks)
        except BaseException as exc:
            for request_id, future in zip(ids, futures):
                self._pending.pop(request_id, None)
                future.cancel()
            if isinstance(exc, KafkaError):
                raise KafkaUnavailable(f"could not publish requests: {exc!r}") from exc
            raise
        results = await asyncio.gather(*(self._await(i, f, deadline, timeout) for i, f in zip(ids, futures)),
                                       return_exceptions=return_exceptions)
        # What _await raises is a ScoreTimeout, or the ClientClosed that stop() sets.
        return cast("list[Result | ScorelineError]", results)

    async def _await(self, request_id: str, future: asyncio.Future[Result], deadline: float,
                     timeout: float) -> Result:
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            raise ScoreTimeout(request_id, timeout) from None
        finally:
            self._pending.pop(request_id, None)
            future.cancel()  # no-op once settled; frees the in-flight slot of a request given up on
            self._remember(request_id)

    def _free_slot(self, _: asyncio.Future[Result]) -> None:
        if self._slots is not None:
            self._slots.release()

    def _check_running(self, request_id: str | None) -> None:
        if not self._running:
            raise ClientClosed(request_id)

    async def _enqueue(self, request: Request) -> asyncio.Future[Any]:
        shard_key = request.context.get(self.shard_key_field)
        topic, value, key, headers = request_record(
            self.layout, request, shard_key=str(shard_key) if shard_key is not None else None,
            reply_partition=self.reply_partition if request.reply_to == self.reply_to else None,
            own_topic=self.own_topic)
        if self._producer is None:
            raise ClientClosed(request.request_id)
        try:
            return await self._producer.send(topic, value, key=key, headers=headers)
        except KafkaError as exc:
            raise KafkaUnavailable(f"could not publish request {request.request_id}: {exc!r}") from exc

    def _count_failure(self, ack: asyncio.Future) -> None:
        if not ack.cancelled() and ack.exception() is not None:
            self.send_failures += 1
            log.warning("%s: a submitted request was refused: %r", self.client, ack.exception())

    def _remember(self, request_id: str) -> None:
        self._finished[request_id] = None
        if len(self._finished) > _REMEMBERED_IDS:
            self._finished.popitem(last=False)

    def _fail_pending(self, error: Callable[[str], BaseException]) -> None:
        for request_id, future in list(self._pending.items()):
            if not future.done():
                future.set_exception(error(request_id))

    async def _read_replies(self, consumer: Reader) -> None:
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self._deliver(record.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Nobody would ever answer the waiting callers: tell them now rather than at their timeout.
            log.exception("%s: reading %s failed", self.client, self.reply_to)
            self._running = False
            reason = f"reading replies on {self.reply_to} failed: {exc!r}"
            self._fail_pending(lambda rid: KafkaUnavailable(reason))

    def _deliver(self, value: bytes) -> None:
        try:
            result = codec.decode_result(value)
        except InvalidMessage:
            log.warning("unreadable reply on %s dropped", self.reply_to)
            return
        future = self._pending.get(result.request_id)
        if future is not None and not future.done():
            future.set_result(result)
            self.delivered += 1
            return
        if future is not None or result.request_id in self._finished:
            self.late_or_duplicate += 1
        else:
            self.foreign += 1
        if self.on_reply is not None:
            self.on_reply(result)


def choose_reply_partition(partitions: list[int], asked: int | None, env: str | None) -> int:
    """The reply partition an instance reads: ``asked``, else ``env`` modulo the count, else a random one.

    Raises:
        InvalidMessage: ``asked`` is not a partition of the topic, or ``env`` is not a number.
    """
    if asked is not None:
        if asked not in partitions:
            raise InvalidMessage(ErrorCode.INVALID_VALUE,
                                 f"reply_partition {asked} does not exist; the reply topic has partitions "
                                 f"{partitions[0]}..{partitions[-1]}", field="reply_partition")
        return asked
    if env:
        if not env.strip().isdigit():
            raise InvalidMessage(ErrorCode.INVALID_VALUE,
                                 f"{REPLY_PARTITION_ENV}={env!r} is not a non-negative integer",
                                 field="reply_partition")
        return partitions[int(env) % len(partitions)]
    return random.choice(partitions)


def now_ms() -> int:
    """Epoch milliseconds, for deadlines."""
    return int(time.time() * 1000)
