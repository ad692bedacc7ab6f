"""Topic names and partition counts, and creating them on start."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.protocol.offset import OffsetRequest

from streams.errors import KafkaUnavailable

__all__ = ["TopicLayout", "TopicSpec", "ensure_topics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic scoreline creates if it is missing."""

    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TopicLayout:
    """Every topic of the contract, under one configurable prefix (default ``scoreline.``)."""

    prefix: str = "scoreline."
    """Prepended to every topic name."""
    request_partitions: int = 4
    """Partitions of the request topics: how many routers can share them."""
    shard_partitions: int = 4
    """Partitions of each shard's work topics: how many workers one shard can have."""
    reply_partitions: int = 4
    """Partitions of the reply topics scoreline creates for the clients in the rules."""
    replication_factor: int = 1
    """Replicas of every topic scoreline creates: 1 on the local broker, 3 on a real cluster."""

    @property
    def requests(self) -> str:
        return f"{self.prefix}requests"

    @property
    def requests_backfill(self) -> str:
        return f"{self.prefix}requests.backfill"

    def shard(self, shard: str, traffic: str = "live") -> str:
        """The work topic of one shard; backfill has its own so it never delays live work."""
        base = f"{self.prefix}shard.{shard}"
        return f"{base}.backfill" if traffic == "backfill" else base

    def client_requests(self, client: str, traffic: str = "live") -> str:
        """A client's own request topic: writable by that client alone, so the topic is its identity."""
        base = f"{self.requests}.{client}"
        return f"{base}.backfill" if traffic == "backfill" else base

    @property
    def shadow(self) -> str:
        return f"{self.prefix}shadow"

    @property
    def shadow_results(self) -> str:
        return f"{self.prefix}shadow-results"

    @property
    def shadow_comparisons(self) -> str:
        return f"{self.prefix}shadow-comparisons"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def rules(self) -> str:
        return f"{self.prefix}rules"

    def replies(self, client: str) -> str:
        return f"{self.prefix}replies.{client}"

    def facts(self, name: str) -> str:
        """The compacted topic of one fact, keyed and partitioned like the shard topics (see facts_topic)."""
        return f"{self.prefix}facts.{name}"

    def specs(self, shards: Iterable[str], reply_topics: Iterable[str] = (),
              clients: Iterable[str] = ()) -> list[TopicSpec]:
        """The topics a pipeline serving ``shards`` needs (with ``clients``' own request topics)."""
        specs = [
            TopicSpec(self.requests, self.request_partitions),
            TopicSpec(self.requests_backfill, self.request_partitions),
            TopicSpec(self.shadow, self.shard_partitions),
            TopicSpec(self.shadow_results, self.shard_partitions),
            TopicSpec(self.shadow_comparisons, self.shard_partitions),
            TopicSpec(self.deadletter, 1),
            TopicSpec(self.rules, 1, (("cleanup.policy", "compact"),)),
        ]
        for shard in shards:
            specs.append(TopicSpec(self.shard(shard), self.shard_partitions))
            specs.append(TopicSpec(self.shard(shard, "backfill"), self.shard_partitions))
        specs += [TopicSpec(t, self.reply_partitions) for t in reply_topics]
        for client in clients:
            specs.append(TopicSpec(self.client_requests(client), self.request_partitions))
            specs.append(TopicSpec(self.client_requests(client, "backfill"), self.request_partitions))
        return specs


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], *, replication_factor: int = 1,
                        **client_options) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {s.name: s for s in specs if s.name not in existing}
        if not wanted:
            return []
        new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication_factor,
                        topic_configs=dict(s.config)) for s in wanted.values()]
        response = await admin.create_topics(new)
        for topic, code, *rest in response.topic_errors:
            # Another process creating the same topic first is what we wanted anyway.
            if code and for_code(code) is not TopicAlreadyExistsError:
                raise KafkaUnavailable(f"could not create topic {topic}: {for_code(code).__name__} {rest[-1] if rest else ''}")
        log.info("created topics %s", sorted(wanted))
        await _wait_for_leaders(admin, wanted)
        return sorted(wanted)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, specs: dict[str, TopicSpec], timeout_s: float = 10.0) -> None:
    """Wait (bounded) until every partition of the new topics answers offset requests.

    Clients that start right after creation otherwise log ``NotLeaderForPartitionError``
    (at ERROR) while the partition leaders take over the new partitions; they would retry and
    succeed, but a user reads error lines on a healthy start. Metadata names a leader before
    that leader serves the partition, so this asks each leader for the partition's end offset,
    the request the consumers make first. After ``timeout_s`` the clients' own retries take over.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await _all_serving(admin, specs):
                return
        except Exception as exc:  # noqa: BLE001 - a probe only: the clients retry on their own
            log.debug("waiting for partition leaders: %r", exc)
        await asyncio.sleep(0.05)
    log.warning("topics %s: not every partition is served after %.0f s; clients will retry", sorted(specs), timeout_s)


async def _all_serving(admin: AIOKafkaAdminClient, specs: dict[str, TopicSpec]) -> bool:
    by_leader: dict[int, dict[str, list[int]]] = {}
    for topic in await admin.describe_topics(list(specs)):
        if topic["error_code"] or len(topic["partitions"]) != specs[topic["topic"]].partitions:
            return False
        for p in topic["partitions"]:
            if p["error_code"] or p["leader"] < 0:
                return False
            by_leader.setdefault(p["leader"], {}).setdefault(topic["topic"], []).append(p["partition"])
    for leader, topics in by_leader.items():
        request = OffsetRequest(replica_id=-1, isolation_level=0,
                                topics=[(t, [(p, -1) for p in parts]) for t, parts in topics.items()])
        response = await admin._client.send(leader, request)  # aiokafka's admin has no list_offsets
        if any(part[1] for _, parts in response.topics for part in parts):  # (partition, error_code, ...)
            return False
    return True
