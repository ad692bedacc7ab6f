"""A step's evidence: the candidate's and the incumbent's results in the step's window, read from the reply topics.

A result counts for a step when it is of the rollout's objective, was routed by the step's rules
version or a later one, is not an experiment cell's (those compare cells, not the canary) and is
not ``test`` traffic. It counts for the candidate when its ``model`` is the candidate, for the
incumbent when it is the incumbent. Its ``status`` (``error`` and ``expired`` are failures) and
``timings_ms.total`` (what the client waited) are the evidence. Shadow comparisons of the
candidate (``<prefix>shadow-comparisons``) feed the agreement guards.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from routing.rollout import Arm, quantile_interval
from schemas.messages import Status, Traffic
from streams.rules.log import quietly
from streams.transport.follow import CatchUp
from streams.transport.protocols import KafkaError, TopicPartition, Transport

__all__ = ["Evidence", "EvidenceReader", "Window", "reply_topic_pattern"]

log = logging.getLogger(__name__)

FAILED = frozenset({Status.ERROR, Status.EXPIRED})


class _Side:
    __slots__ = ("results", "errors", "latencies")

    def __init__(self) -> None:
        self.results = 0
        self.errors = 0
        self.latencies: list[float] = []

    def arm(self) -> Arm:
        return Arm(self.results, self.errors, self.latencies)

    def summary(self) -> dict[str, Any]:
        p50, _ = quantile_interval(self.latencies, 0.5)
        p99, _ = quantile_interval(self.latencies, 0.99)
        return {"results": self.results, "errors": self.errors,
                "error_rate": round(self.errors / self.results, 4) if self.results else None,
                "p50_ms": p50, "p99_ms": p99}


class Window:
    """One rollout step's evidence: results since ``since_version``, and the candidate's shadow agreement."""

    def __init__(self, objective: str, candidate: str, incumbent: str, since_version: int,
                 metrics: Iterable[str] = ()) -> None:
        self.objective, self.candidate, self.incumbent = objective, candidate, incumbent
        self.since_version = since_version
        self.sides = {candidate: _Side(), incumbent: _Side()}
        self.agreement: dict[str, list[Any]] = {m: [] for m in metrics}
        self.compared_ids: set[str] = set()
        self.result_ids: set[str] = set()

    @property
    def candidate_arm(self) -> Arm:
        return self.sides[self.candidate].arm()

    @property
    def incumbent_arm(self) -> Arm:
        return self.sides[self.incumbent].arm()

    def absorb_result(self, doc: dict[str, Any]) -> None:
        if doc.get("objective") != self.objective or doc.get("cell") is not None \
                or doc.get("traffic") == Traffic.TEST:
            return
        version = doc.get("rules_version")
        side = self.sides.get(doc.get("model"))  # type: ignore[arg-type]
        if side is None or not isinstance(version, int) or version < self.since_version:
            return
        request_id = doc.get("request_id")
        if request_id in self.result_ids:  # a replay, or the window read again: counted once
            return
        self.result_ids.add(request_id)  # type: ignore[arg-type]
        side.results += 1
        if doc.get("status") in FAILED:
            side.errors += 1
        else:
            total = (doc.get("timings_ms") or {}).get("total")
            if isinstance(total, (int, float)):
                side.latencies.append(float(total))

    def absorb_comparison(self, doc: dict[str, Any]) -> None:
        if not self.agreement or doc.get("objective") != self.objective \
                or doc.get("shadow_model") != self.candidate or not doc.get("matched"):
            return
        request_id = doc.get("request_id")
        if request_id in self.compared_ids:  # a replayed comparison counts once
            return
        self.compared_ids.add(request_id)  # type: ignore[arg-type]
        measures = doc.get("agreement") or {}
        for metric, values in self.agreement.items():
            if measures.get(metric) is not None:
                values.append(measures[metric])

    def summary(self) -> dict[str, Any]:
        return {"since_rules_version": self.since_version,
                "candidate": self.sides[self.candidate].summary(),
                "incumbent": self.sides[self.incumbent].summary(),
                "shadow_comparisons": len(self.compared_ids)}


def reply_topic_pattern(prefix: str, reply_topics: Iterable[str]) -> re.Pattern[str]:
    """The topics results go to: ``<prefix>replies.*`` and every reply topic the rules' clients may name."""
    parts = [re.escape(f"{prefix}replies.") + ".*"]
    for topic in reply_topics:
        parts.append(re.escape(topic[:-1]) + ".*" if topic.endswith("*") else re.escape(topic))
    return re.compile("^(?:" + "|".join(parts) + ")$")


class EvidenceReader:
    """Reads reply topics (and the comparison topic) from a point in time, without a consumer group.

    It never commits: a restarted controller seeks back to the start of its step's window and
    reads it again, so the evidence survives the controller.
    """

    def __init__(self, transport: Transport, comparisons_topic: str) -> None:
        self.comparisons_topic = comparisons_topic
        self.consumer = transport.reader("rollout-evidence")
        self.started = False
        self.assigned: set[TopicPartition] = set()
        self.comparisons = CatchUp(self.consumer)
        """The comparison partitions being read up to where they ended when a shadow was last opened."""

    async def start(self) -> None:
        await self.consumer.start()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            await quietly(self.consumer.stop())
            self.started = False

    async def follow(self, pattern: re.Pattern[str], results_since_ms: int | None,
                     comparisons_since_ms: int | None = None) -> None:
        """Read every topic ``pattern`` matches, and the comparison topic when ``comparisons_since_ms`` is given.

        Result partitions read from ``results_since_ms``; with None, those already read stay where they
        are and new ones start at their end. The comparison topic starts at ``comparisons_since_ms`` once;
        after that it is followed where it is.
        """
        reading_comparisons = any(tp.topic == self.comparisons_topic for tp in self.assigned)
        topics = {t for t in await self.consumer.topics() if pattern.match(t)}
        if comparisons_since_ms is not None:
            topics.add(self.comparisons_topic)
        wanted = {TopicPartition(topic, p) for topic, numbers in (await self.consumer.partitions(*topics)).items()
                  for p in numbers}
        new = wanted - self.assigned
        # Assigning replaces the assignment and forgets positions: those already read stay where they are.
        kept = {tp: await self.consumer.position(tp) for tp in self.assigned}
        self.assigned |= wanted
        self.consumer.assign(sorted(self.assigned))
        for tp, offset in kept.items():
            self.consumer.seek(tp, offset)
        ends = await self.consumer.end_offsets(list(self.assigned))
        since = {tp: results_since_ms for tp in self.assigned
                 if tp.topic != self.comparisons_topic and results_since_ms is not None}
        if comparisons_since_ms is not None and not reading_comparisons:
            since |= {tp: comparisons_since_ms for tp in self.assigned if tp.topic == self.comparisons_topic}
        offsets = await self.consumer.offsets_for_times(since) if since else {}
        for tp in since:
            found = offsets.get(tp)
            self.consumer.seek(tp, found.offset if found is not None else ends[tp])
        for tp in new - set(since):
            self.consumer.seek(tp, ends[tp])
        if comparisons_since_ms is not None:
            self.comparisons.targets = {tp: end for tp, end in ends.items() if tp.topic == self.comparisons_topic}

    async def comparisons_read(self) -> bool:
        """Whether the comparison topic has been read up to where it ended when :meth:`follow` last looked."""
        return await self.comparisons.done()

    async def poll(self, timeout_s: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The results and comparisons read within ``timeout_s`` (decoded; unreadable records skipped)."""
        if not self.assigned:
            await asyncio.sleep(timeout_s)
            return [], []
        try:
            batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=5000)
        except KafkaError as exc:
            log.warning("rollout evidence: reading failed (%r); retrying", exc)
            await asyncio.sleep(timeout_s)
            return [], []
        results: list[dict[str, Any]] = []
        comparisons: list[dict[str, Any]] = []
        for tp, records in batches.items():
            into = comparisons if tp.topic == self.comparisons_topic else results
            for record in records:
                try:
                    doc = orjson.loads(record.value) if record.value is not None else None
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict):
                    into.append(doc)
        return results, comparisons


class Evidence:
    """Every running rollout's evidence: its step's :class:`Window`, its shadow comparisons, one reader for all.

    ``reply_topics`` gives the reply topics the rules in force let clients name (read again at each
    window, so a client added meanwhile is followed too).
    """

    def __init__(self, transport: Transport, prefix: str, comparisons_topic: str,
                 reply_topics: Callable[[], Iterable[str]]) -> None:
        self.reader = EvidenceReader(transport, comparisons_topic)
        self.prefix, self.reply_topics = prefix, reply_topics
        self.windows: dict[str, Window] = {}
        self.shadow: dict[str, Window] = {}

    async def start(self) -> None:
        await self.reader.start()

    async def stop(self) -> None:
        await self.reader.stop()

    def clear(self) -> None:
        """Forget every window (a controller taking the lease rebuilds them from the topics)."""
        self.windows, self.shadow = {}, {}

    def window(self, objective: str) -> Window | None:
        return self.windows.get(objective)

    async def open_window(self, objective: str, candidate: str, incumbent: str, *, rules_version: int,
                          started_ms: int) -> Window:
        """A new window for a step put in force by ``rules_version`` at ``started_ms``, read from then on."""
        window = Window(objective, candidate, incumbent, rules_version)
        self.windows[objective] = window
        # A second back: the publish time is the controller's clock, the records' the producers'.
        await self.reader.follow(self._pattern(), started_ms - 1000)
        return window

    async def open_shadow(self, objective: str, candidate: str, incumbent: str, metrics: Iterable[str], *,
                          since_ms: int) -> Window:
        """The candidate's shadow comparisons since ``since_ms`` (read once; then followed)."""
        shadow = self.shadow.get(objective)
        if shadow is None:
            shadow = Window(objective, candidate, incumbent, 0, metrics)
            self.shadow[objective] = shadow
            await self.reader.follow(self._pattern(), None, comparisons_since_ms=since_ms)
        return shadow

    async def comparisons_read(self) -> bool:
        """Whether the comparisons up to the time the last shadow was opened have all been read."""
        return await self.reader.comparisons_read()

    def agreement(self, objective: str, metric: str) -> list[Any]:
        shadow = self.shadow.get(objective)
        return shadow.agreement.get(metric, []) if shadow is not None else []

    def forget(self, objective: str) -> None:
        self.windows.pop(objective, None)
        self.shadow.pop(objective, None)

    async def poll(self, timeout_s: float) -> int:
        """Read for up to ``timeout_s`` and give each window what is its; return the records read."""
        results, comparisons = await self.reader.poll(timeout_s)
        for window in self.windows.values():
            for doc in results:
                window.absorb_result(doc)
        for window in self.shadow.values():
            for doc in comparisons:
                window.absorb_comparison(doc)
        return len(results) + len(comparisons)

    def _pattern(self) -> re.Pattern[str]:
        return reply_topic_pattern(self.prefix, self.reply_topics())
