"""Keeping a worker's fact store current from the fact-topic partitions it owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import orjson

from streams.facts.records import DTYPE_HEADER, KIND_HEADER, SPEC_KEY, WIDTH_HEADER, WIRE_DTYPES
from streams.topics import TopicLayout
from streams.transport.follow import Follower
from streams.transport.headers import headers_of
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import Record, TopicPartition, Transport
from streams.transport.settings import KafkaSettings
from workflows import InMemoryFactStore, ModelRegistry

__all__ = ["FactTopicMaterialiser", "facts_of", "worker_fact_source"]

# The fact topics' log lines (published, loaded, skipped) share the name of streams.facts.topic,
# so operators filter them by one name.
log = logging.getLogger("streams.facts.topic")


def facts_of(registry: ModelRegistry) -> list[str]:
    """Every fact some readable model of ``registry`` looks up."""
    return sorted({f for model in registry.list_models() for f in model["facts"]})


def worker_fact_source(kafka: KafkaSettings, layout: TopicLayout,
                       registry: ModelRegistry) -> tuple[ModelRegistry, FactTopicMaterialiser]:
    """A registry of the same packages over a fresh store, and the materialiser that fills it.

    Each worker gets its own pair: its store holds only the facts of the partitions it owns.
    """
    store = InMemoryFactStore()
    return ModelRegistry(registry.models_dir, store), FactTopicMaterialiser(kafka, layout, facts_of(registry), store)


class FactTopicMaterialiser:
    """Reads the fact-topic partitions a worker owns into an in-memory store, then follows them.

    Usage: ``start()``, then ``await follow(partitions)`` before each scoring batch with
    the partition numbers the worker owns; it re-targets when they change and returns
    once every newly assigned fact partition is read up to the end offset seen when it
    was assigned. No consumer group: partitions are assigned explicitly and read from
    the beginning each time they are (re)acquired (:class:`~streams.transport.follow.Follower`).
    """

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, facts: Iterable[str],
                 store: InMemoryFactStore | None = None, *, ready_timeout: float = 120.0,
                 transport: Transport | None = None) -> None:
        self.kafka = kafka
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        self.layout = layout
        self.facts = tuple(facts)
        self.store = store if store is not None else InMemoryFactStore()
        self.ready_timeout = ready_timeout
        """How long ``follow`` waits for the facts before giving up (the worker then replays the batch)."""
        self.records = 0
        self.skipped = 0
        """Records that could not be applied (bad width or dtype, undecodable spec)."""
        self._fact_of = {layout.facts(f): f for f in self.facts}
        self._partitions: dict[str, int] = {}
        self._global: set[str] = set()
        self._specs: dict[str, dict] = {}
        self._pending: dict[str, dict[str, tuple[TopicPartition, np.ndarray | None]]] = defaultdict(dict)
        self._keys: dict[TopicPartition, set[str]] = defaultdict(set)
        self._owned: frozenset[int] | None = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._follower: Follower | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FactTopicMaterialiser:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect; nothing is read until the first :meth:`follow`."""
        self._follower = Follower(self.transport.reader("facts", max_records=5000))
        await self._follower.start()
        self._task = asyncio.create_task(self._follow_loop(), name="scoreline-facts")

    async def stop(self) -> None:
        """Stop reading and disconnect (the store keeps what it holds)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._follower is not None:
            await self._follower.stop()

    @property
    def _live(self) -> Follower:
        """The reader of the fact partitions, once started."""
        if self._follower is None:
            raise RuntimeError("the fact materialiser is not started")
        return self._follower

    @property
    def ready(self) -> bool:
        """True once every assigned fact partition was read up to its end offset at assignment."""
        return self._ready.is_set()

    async def follow(self, partitions: Iterable[int]) -> None:
        """Own exactly these shard partition numbers' facts; return once they are loaded.

        Raises:
            TimeoutError: the facts were not loaded within ``ready_timeout``.
        """
        owned = frozenset(partitions)
        if owned != self._owned:
            async with self._lock:
                self._owned = owned
                await self._reassign()
        if not self._ready.is_set():
            began = time.monotonic()
            await asyncio.wait_for(self._ready.wait(), self.ready_timeout)
            log.info("facts of partitions %s loaded in %.2fs: %s", sorted(owned), time.monotonic() - began,
                     self.stats()["rows"])

    def stats(self) -> dict:
        """What is held and read: rows per fact, assigned partitions, readiness, counters."""
        rows = {f: len(self.store.keys(f)) for f in self.store.facts()}
        owned = self._follower.assignment() if self._follower else ()
        assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in owned)
        return {"rows": rows, "owned": sorted(self._owned or ()), "assigned": assigned, "ready": self.ready,
                "global": sorted(self._global), "records": self.records, "skipped": self.skipped,
                "missing": self.store.missing_counts()}

    # -- assignment -------------------------------------------------------------

    async def _discover(self) -> None:
        """Learn the partition counts of the fact topics not seen yet (a topic may appear later)."""
        unknown = [t for t in self._fact_of if t not in self._partitions]
        found = await self._live.reader.partitions(*unknown) if unknown else {}
        for topic in unknown:
            partitions = found.get(topic)
            if partitions:
                self._partitions[topic] = len(partitions)
            else:
                log.warning("fact topic %s does not exist: publish it (scoreline facts publish); models that "
                            "need fact %s are unavailable until then", topic, self._fact_of[topic])

    async def _reassign(self) -> None:
        """Assign the fact partitions the owned shard partitions need; the caller holds the lock."""
        await self._discover()
        wanted: set[TopicPartition] = set()
        for topic, count in self._partitions.items():
            if self._fact_of[topic] in self._global:
                numbers: Iterable[int] = range(count)
            else:
                numbers = (p for p in self._owned or () if p < count)
            wanted.update(TopicPartition(topic, p) for p in numbers)
        if wanted != self._live.assignment():
            for tp in await self._live.follow(wanted):  # new partitions replay from the beginning
                self._drop(tp)
            log.info("facts: following %d partitions for shard partitions %s", len(wanted), sorted(self._owned or ()))
        self._check_ready()

    def _drop(self, tp: TopicPartition) -> None:
        """Forget the rows of a partition this worker no longer owns."""
        fact = self._fact_of[tp.topic]
        keys = self._keys.pop(tp, set())
        if keys and fact in self.store.facts():
            self.store.delete(fact, keys)
        for key in [k for k, (p, _) in self._pending[fact].items() if p == tp]:
            del self._pending[fact][key]

    def _check_ready(self) -> None:
        if self._live.caught_up:
            self._ready.set()
        else:
            self._ready.clear()

    # -- reading ----------------------------------------------------------------

    async def _follow_loop(self) -> None:
        while True:
            if not self._live.assignment():
                await asyncio.sleep(0.1)
                continue
            async with self._lock:
                batch = await self._live.poll(timeout_ms=100)
                for tp, records in batch.items():
                    self._apply(tp, records)
                rescope = self._global - {self._fact_of[t] for t in self._all_partitions_assigned()}
                if rescope:
                    await self._reassign()  # a spec said global: read every partition of that fact
                else:
                    self._check_ready()

    def _all_partitions_assigned(self) -> set[str]:
        assigned: dict[str, int] = defaultdict(int)
        for tp in self._live.assignment():
            assigned[tp.topic] += 1
        return {t for t, n in assigned.items() if n == self._partitions.get(t)}

    def _apply(self, tp: TopicPartition, records: list[Record]) -> None:
        fact = self._fact_of[tp.topic]
        keys: list[str] = []
        rows: list[np.ndarray] = []
        for record in records:
            self.records += 1
            if headers_of(record.headers).get(KIND_HEADER) == "spec" or record.key == SPEC_KEY:
                self._put(fact, keys, rows)
                keys, rows = [], []
                self._apply_spec(fact, record)
                continue
            key = (record.key or b"").decode("utf-8", "replace")
            row = self._decode_row(fact, record)
            if record.value is not None and row is None:
                continue
            if fact not in self._specs:
                self._pending[fact][key] = (tp, row)  # a row compacted to before its spec: wait for the spec
                continue
            if row is None:  # tombstone
                self._put(fact, keys, rows)
                keys, rows = [], []
                self.store.delete(fact, [key])
                self._keys[tp].discard(key)
                continue
            keys.append(key)
            rows.append(row)
            self._keys[tp].add(key)
        self._put(fact, keys, rows)

    def _put(self, fact: str, keys: list[str], rows: list[np.ndarray]) -> None:
        if not keys:
            return
        try:
            self.store.put(fact, keys, np.stack(rows))
        except ValueError:  # rows of another width than the spec in force
            log.warning("fact %s: %d rows do not match the spec; skipped", fact, len(keys), exc_info=True)
            self.skipped += len(keys)

    def _decode_row(self, fact: str, record: Record) -> np.ndarray | None:
        if record.value is None:
            return None
        headers = headers_of(record.headers)
        dtype = WIRE_DTYPES.get(headers.get(DTYPE_HEADER, ""))
        width = headers.get(WIDTH_HEADER, "")
        if dtype is None or not width.isdigit() or len(record.value) != int(width) * dtype.itemsize:
            log.warning("fact %s: record %s@%s has a bad dtype/width; skipped", fact, record.partition, record.offset)
            self.skipped += 1
            return None
        return np.frombuffer(record.value, dtype=dtype).astype(np.float64)

    def _apply_spec(self, fact: str, record: Record) -> None:
        try:
            doc = orjson.loads(record.value or b"")
            columns, default = [str(c) for c in doc["columns"]], [float(x) for x in doc["default"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("fact %s: undecodable spec at %s@%s; skipped", fact, record.partition, record.offset)
            self.skipped += 1
            return
        known = self._specs.get(fact)
        if known is None or known["columns"] != columns or known["default"] != default:
            # A first spec, or a changed one: (re)define; rows of another width will not fit it.
            self.store.define(fact, columns, default, key=str(doc.get("key", "")),
                              description=str(doc.get("description", "")))
            self._specs[fact] = {"columns": columns, "default": default}
        if doc.get("scope") == "global":
            self._global.add(fact)
        pending = self._pending.pop(fact, {})
        for key, (tp, row) in pending.items():
            if row is None:
                continue
            self._keys[tp].add(key)
            self._put(fact, [key], [row])
