"""Cluster administration scoreline does itself: creating its topics, and asking whether a group has members."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.protocol.offset import OffsetRequest

from streams.errors import KafkaUnavailable
from streams.topics import TopicLayout, TopicSpec
from streams.transport.admin_client import ClusterAdmin
from streams.transport.settings import KafkaSettings

__all__ = ["COORDINATOR_WAIT_S", "ensure_topics", "replication_for", "router_running", "topic_replication",
           "wait_for_coordinator"]

log = logging.getLogger(__name__)


MAX_REPLICAS = 3
"""Replicas of a topic on a cluster of three or more brokers, when nobody says otherwise."""


def replication_for(brokers: int) -> int:
    """The replication factor that follows a cluster of ``brokers``: one on one broker, at most three."""
    return max(1, min(MAX_REPLICAS, brokers))


def topic_replication(replicas: int) -> dict[str, str]:
    """Topic configs that go with ``replicas``: with three, an acknowledged write is on two of them."""
    return {"min.insync.replicas": "2"} if replicas >= 3 else {}


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], *, replication_factor: int | None = None,
                        **client_options) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    ``replication_factor`` None follows the cluster (:func:`replication_for` its live brokers,
    with :func:`topic_replication`'s ``min.insync.replicas``); a spec's own config wins.
    """
    admin = ClusterAdmin(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {s.name: s for s in specs if s.name not in existing}
        if not wanted:
            return []
        replicas = replication_factor or replication_for(len((await admin.describe_cluster())["brokers"]))
        new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=replicas,
                        topic_configs=topic_replication(replicas) | dict(s.config)) for s in wanted.values()]
        response = await admin.create_topics(new)
        for topic, code, *rest in response.topic_errors:
            # Another process creating the same topic first is what we wanted anyway.
            if code and for_code(code) is not TopicAlreadyExistsError:
                detail = rest[-1] if rest else ""
                raise KafkaUnavailable(f"could not create topic {topic}: {for_code(code).__name__} {detail}")
        log.info("created topics %s with %d replicas", sorted(wanted), replicas)
        await _wait_for_leaders(admin, wanted)
        return sorted(wanted)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: ClusterAdmin, specs: dict[str, TopicSpec], timeout_s: float = 10.0) -> None:
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


async def _all_serving(admin: ClusterAdmin, specs: dict[str, TopicSpec]) -> bool:
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


COORDINATOR_WAIT_S = 120.0
"""Longest wait for a group coordinator before a service gives up starting (a cluster still electing)."""

_coordinated: set[str] = set()
"""Bootstrap addresses on which a group coordinator was found: the offsets topic is served there."""


async def wait_for_coordinator(kafka: KafkaSettings, group_id: str, timeout_s: float = COORDINATOR_WAIT_S) -> None:
    """Return once the cluster names a coordinator for ``group_id``; raise ``KafkaUnavailable`` after ``timeout_s``.

    A broker that has just started has no offsets topic yet: the first lookup creates it, and
    lookups fail until its partitions have leaders. Once one lookup on a cluster succeeds,
    later groups on it are not asked again (aiokafka's own lookup retries a leader moving).
    """
    if kafka.bootstrap in _coordinated:
        return
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        admin = kafka.admin(request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.find_coordinator(group_id)
            _coordinated.add(kafka.bootstrap)
            return
        except Exception as exc:  # noqa: BLE001 - not ready yet: ask again until the deadline
            last = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"no group coordinator for {group_id!r} on {kafka.bootstrap} after "
                                   f"{timeout_s:.0f} s (last answer: {last!r}); is every broker up?")
        log.debug("waiting for a coordinator for %s: %r", group_id, last)
        await asyncio.sleep(0.25)


async def router_running(kafka: KafkaSettings, layout: TopicLayout) -> bool:
    """Whether the router group of ``layout`` has members, i.e. someone routes what is published."""
    admin = kafka.admin()
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([f"{layout.prefix}router"])
        return any(group["members"] for r in responses for group in r.to_object()["groups"])
    except Exception:  # noqa: BLE001 - no such group yet, or no coordinator: nobody routes
        return False
    finally:
        await admin.close()
