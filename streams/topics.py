"""Topic names and partition counts: every topic of the contract under one prefix (pure: no Kafka client)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TopicLayout", "TopicSpec"]


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
    replication_factor: int | None = None
    """Replicas of every topic scoreline creates; None (the default) follows the cluster:
    ``min(3, brokers)``, with ``min.insync.replicas`` 2 where there are three (``transport.admin``)."""

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

    def worker_group(self, shard: str) -> str:
        """The consumer group of one shard's workers: the router reads its lag, KEDA scales on it."""
        return f"{self.prefix}worker.{shard}"

    @property
    def shadow_group(self) -> str:
        """The consumer group of the shadow workers."""
        return f"{self.prefix}shadow"

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

    @property
    def models(self) -> str:
        """The model repository: published packages in chunks, compacted (``streams.repository``)."""
        return f"{self.prefix}models"

    @property
    def rollouts(self) -> str:
        """The state of guarded rollouts, one key per objective, compacted (``streams.rollouts``)."""
        return f"{self.prefix}rollouts"

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
            TopicSpec(self.rollouts, 1, (("cleanup.policy", "compact"),)),
        ]
        for shard in shards:
            specs.append(TopicSpec(self.shard(shard), self.shard_partitions))
            specs.append(TopicSpec(self.shard(shard, "backfill"), self.shard_partitions))
        specs += [TopicSpec(t, self.reply_partitions) for t in reply_topics]
        for client in clients:
            specs.append(TopicSpec(self.client_requests(client), self.request_partitions))
            specs.append(TopicSpec(self.client_requests(client, "backfill"), self.request_partitions))
        return specs
