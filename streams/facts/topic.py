"""Facts on Kafka: one compacted topic per fact, co-partitioned with the shard topics.

``scoreline.facts.<name>`` holds the rows of one fact, keyed by the fact's key
(the user id for user facts). It has as many partitions as a shard topic and a
row goes to ``routing.partition_for(key, partitions)`` -- the partitioner the
router uses for work -- so fact partition *p* holds exactly the users whose
requests land on shard partition *p*. A worker that owns shard partitions
{0, 2} therefore needs fact partitions {0, 2} only, and never a fact held
elsewhere: that is why requests are routed by shard key.

The record formats are in :mod:`streams.facts.records`.

:func:`publish_facts` writes facts from a store or a directory;
:class:`FactTopicMaterialiser` (:mod:`streams.facts.materialiser`) keeps an
:class:`~workflows.facts.InMemoryFactStore` current from the partitions a
worker owns, and tells the worker when it may score.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np

from routing import partition_for
from schemas.errors import ScorelineError
from streams.facts.materialiser import FactTopicMaterialiser, facts_of, worker_fact_source
from streams.facts.records import (
    DTYPE_HEADER,
    KIND_HEADER,
    SHARD_KEY_FIELDS,
    SPEC_KEY,
    WIDTH_HEADER,
    WIRE_DTYPES,
    spec_record,
    wire_dtype,
)
from streams.topics import TopicLayout, TopicSpec
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import Transport
from streams.transport.settings import KafkaSettings
from workflows import InMemoryFactStore

__all__ = [
    "FactTopicError",
    "FactTopicMaterialiser",
    "KIND_HEADER",
    "SPEC_KEY",
    "facts_of",
    "publish_facts",
    "worker_fact_source",
]

log = logging.getLogger(__name__)


class FactTopicError(ScorelineError):
    """A fact topic cannot keep its promise (wrong partition count, unknown fact)."""

    code = "fact_topic_error"


async def publish_facts(kafka: KafkaSettings, layout: TopicLayout, store_or_dir: InMemoryFactStore | str | Path,
                        facts: Iterable[str] | None = None, *,
                        shard_key_fields: Collection[str] = SHARD_KEY_FIELDS,
                        transport: Transport | None = None) -> dict[str, dict]:
    """Publish facts to their compacted topics (created with the shard topics' partition count).

    Args:
        store_or_dir: a store, or a directory of fact files (``InMemoryFactStore.from_dir``).
        facts: the facts to publish; default every fact of the store.
        shard_key_fields: fact keys that are shard keys; facts keyed otherwise are ``global``.

    Returns:
        Per fact: ``{"topic", "rows", "partitions", "scope", "dtype", "rows_per_partition"}``.

    Raises:
        FactTopicError: an unknown fact, or an existing topic whose partition count differs
            from the shard topics' (co-partitioning would silently break).
    """
    if isinstance(store_or_dir, InMemoryFactStore):
        store = store_or_dir
    elif Path(store_or_dir).is_dir():
        store = InMemoryFactStore.from_dir(store_or_dir)
    else:
        raise FactTopicError(f"dir: {store_or_dir} is not a directory of fact files")
    names = list(facts) if facts is not None else list(store.facts())
    unknown = sorted(set(names) - set(store.facts()))
    if unknown:
        raise FactTopicError(f"fact: no fact named {', '.join(unknown)} (have: {', '.join(store.facts())})")
    partitions = layout.shard_partitions
    transport = transport if transport is not None else KafkaTransport(kafka)
    await transport.ensure_topics([TopicSpec(layout.facts(n), partitions, (("cleanup.policy", "compact"),))
                                   for n in names], replication_factor=layout.replication_factor)
    producer = transport.producer("facts")
    await producer.start()
    report: dict[str, dict] = {}
    try:
        for name in names:
            topic = layout.facts(name)
            have = len(await producer.partitions_for(topic))
            if have != partitions:
                raise FactTopicError(f"topic {topic} has {have} partitions but the shard topics have {partitions}: "
                                     f"fact partitions would not line up with work partitions")
            spec = store.spec(name)
            keys = list(store.keys(name))
            values = store.lookup(name, keys).values if keys else np.empty((0, spec.width))
            dtype = wire_dtype(values)
            scope = "shard" if spec.key in shard_key_fields else "global"
            spec_value = spec_record(spec, scope, dtype, partitions)
            sends = [await producer.send(topic, spec_value, key=SPEC_KEY, partition=p,
                                         headers=[(KIND_HEADER, b"spec")]) for p in range(partitions)]
            headers = [(KIND_HEADER, b"row"), (DTYPE_HEADER, dtype.encode()), (WIDTH_HEADER, str(spec.width).encode())]
            wire = values.astype(WIRE_DTYPES[dtype])
            per_partition = [0] * partitions
            for key, row in zip(keys, wire):
                p = partition_for(key, partitions)
                per_partition[p] += 1
                sends.append(await producer.send(topic, row.tobytes(), key=key.encode(), partition=p, headers=headers))
            await asyncio.gather(*sends)
            report[name] = {"topic": topic, "rows": len(keys), "partitions": partitions, "scope": scope,
                            "dtype": dtype, "rows_per_partition": per_partition}
            log.info("published %d rows of %s to %s", len(keys), name, topic)
    finally:
        await producer.stop()
    return report
