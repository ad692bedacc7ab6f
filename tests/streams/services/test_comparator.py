"""The comparator: the pure join, then against a real broker (in-process and killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from streams_testing import wait_for_log

from schemas import codec
from schemas.messages import Comparison, ShadowResult, Unmatched
from streams.services import pairing
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.topics import TopicSpec
from streams.transport.admin import ensure_topics
from streams.transport.kafka import aiokafka_consumer, aiokafka_producer
from streams.transport.protocols import TopicPartition
from streams.transport.tail import TopicTail
from workflows import sample_items
from workflows.agreement import agreement

WINDOW = {"window_ms": 1000, "retention_ms": 5000}


def side(role: str, rid: str = "r-1", model: str = "m@v1", status: str = "ok", ts: int = 1000,
         result: dict | None = None, shadows: tuple[str, ...] = ("m@v2",)) -> ShadowResult:
    ranking = result if result is not None else {"ranking": [{"title": "a", "score": 0.9},
                                                              {"title": "b", "score": 0.4}]}
    return ShadowResult(role=role, request_id=rid, objective="title-ranking", model=model, primary_model="m@v1",
                        shadow_models=list(shadows), cell=None, rules_version=3, shard="s1", status=status,
                        result=ranking if status == "ok" else None, error=None, latency_ms=2.0, traffic="live",
                        context={"country": "US", "client": "demo"}, ts_ms=ts)


def feed(entry, s: ShadowResult):
    return pairing.absorb(entry, s, orjson.loads(codec.encode(s)), partition=0)


# --- the pure join ------------------------------------------------------------------------------


def test_a_pair_in_either_order_gives_one_comparison_and_closes() -> None:
    primary, shadow = side("primary", ts=1000), side("shadow", model="m@v2", ts=1005)
    for first, second in ((primary, shadow), (shadow, primary)):
        entry, out = feed(None, first)
        assert out == []
        entry, out = feed(entry, second)
        (c,) = out
        assert (c.request_id, c.primary_model, c.shadow_model, c.matched, c.reason) == ("r-1", "m@v1", "m@v2",
                                                                                       True, None)
        assert c.agreement == agreement(primary.result, shadow.result) and c.ts_ms == 1005
        assert entry["closed_ms"] == 1005 and entry["primary"] is None
        # A replayed side finds the entry closed and changes nothing.
        again, out = feed(entry, second)
        assert again is entry and out == []


def test_two_candidates_each_get_their_comparison() -> None:
    shadows = ("m@v2", "m@v3")
    entry, _ = feed(None, side("primary", shadows=shadows))
    entry, out = feed(entry, side("shadow", model="m@v3", shadows=shadows))
    assert [c.shadow_model for c in out] == ["m@v3"] and entry["closed_ms"] is None
    entry, out = feed(entry, side("shadow", model="m@v2", shadows=shadows))
    assert [c.shadow_model for c in out] == ["m@v2"] and entry["closed_ms"] is not None


def test_failed_sides_are_unmatched_with_their_reason() -> None:
    entry, _ = feed(None, side("primary"))
    _, (c,) = feed(entry, side("shadow", model="m@v2", status="error"))
    assert (c.matched, c.reason, c.shadow_status, c.agreement) == (False, Unmatched.SHADOW_FAILED, "error", {})
    entry, _ = feed(None, side("shadow", model="m@v2", status="expired"))
    _, (c,) = feed(entry, side("primary", status="expired"))
    assert (c.matched, c.reason) == (False, Unmatched.PRIMARY_FAILED)


def test_a_partner_that_never_arrives_times_out_once_then_is_forgotten() -> None:
    entry, _ = feed(None, side("primary", ts=1000))
    assert pairing.expire(entry, 2000, **WINDOW) == (entry, [])
    closed, (c,) = pairing.expire(entry, 2001, **WINDOW)
    assert (c.matched, c.reason, c.primary_status, c.shadow_status, c.ts_ms) == (False, "timed_out", "ok",
                                                                                None, 2001)
    assert pairing.expire(closed, 3000, **WINDOW) == (closed, [])
    # The late partner is ignored: the pair was already reported.
    assert feed(closed, side("shadow", model="m@v2"))[1] == []
    assert pairing.expire(closed, 2001 + 5001, **WINDOW) == (None, [])


def test_a_lone_shadow_times_out_with_a_null_primary() -> None:
    entry, _ = feed(None, side("shadow", model="m@v2", ts=1000))
    _, (c,) = pairing.expire(entry, 5000, **WINDOW)
    assert (c.shadow_model, c.primary_status, c.shadow_status, c.reason) == ("m@v2", None, "ok", "timed_out")


# --- against a real broker ------------------------------------------------------------------------


def direct_measures(primary: ShadowResult, shadow: ShadowResult) -> dict:
    """The headline measures computed straight from the two rankings."""
    a = [e["title"] for e in primary.result["ranking"]]
    b = [e["title"] for e in shadow.result["ranking"]]
    k = min(len(a), len(b))
    common = [t for t in a if t in b]
    pairs = [(x, y) for i, x in enumerate(common) for y in common[i + 1:]]
    tau = sum(1 if b.index(x) < b.index(y) else -1 for x, y in pairs) / len(pairs) if pairs else None
    sa = {e["title"]: e["score"] for e in primary.result["ranking"]}
    sb = {e["title"]: e["score"] for e in shadow.result["ranking"]}
    return {"top_k_overlap": len(set(a[:k]) & set(b[:k])) / k, "top1_agrees": a[0] == b[0], "kendall_tau": tau,
            "score_delta_max_abs": max((abs(sb[t] - sa[t]) for t in common), default=None)}


def check_against_sides(comparisons: list[Comparison], sides: list[ShadowResult]) -> None:
    by_key = {(s.request_id, s.role): s for s in sides}
    for c in comparisons:
        primary, shadow = by_key[c.request_id, "primary"], by_key[c.request_id, "shadow"]
        assert (c.primary_model, c.shadow_model) == (primary.model, shadow.model)
        assert (c.primary_latency_ms, c.shadow_latency_ms) == (primary.latency_ms, shadow.latency_ms)
        assert (c.rules_version, c.cell, c.context, c.traffic) == (primary.rules_version, primary.cell,
                                                                   primary.context, primary.traffic)
        assert c.matched and c.agreement["kind"] == "ranking"
        for name, value in direct_measures(primary, shadow).items():
            assert c.agreement[name] == (value if value is None else pytest.approx(value)), name


@pytest.mark.kafka
async def test_shadow_all_gives_exactly_one_comparison_per_request(kafka, layout, shadow_all_rules, registry):
    from streams.client.score_client import ScoreClient

    async with Pipeline(kafka, layout, shadow_all_rules, registry, PipelineOptions(follow_rules=False)) as pipeline:
        await pipeline.wait_ready()
        async with TopicTail(kafka, [layout.shadow_comparisons]) as out, \
                TopicTail(kafka, [layout.shadow_results]) as sides, \
                ScoreClient(kafka, "demo", layout=layout) as client:
            requests = [client.request("title-ranking", i.context, i.payload)
                        for i in sample_items("title-ranking", 40, seed=3)]
            await client.score_many(requests, timeout=60, return_exceptions=False)
            assert await out.wait_for(lambda: len(out.records) >= len(requests), timeout=60)
            await sides.wait_for(lambda: len(sides.records) >= 2 * len(requests), timeout=30)
            # Anything extra (a duplicate) would arrive right behind: look once more before judging.
            await out.wait_for(lambda: len(out.records) > len(requests), timeout=2)

    comparisons = [codec.decode_comparison(r.value) for r in out.records]
    assert Counter(c.request_id for c in comparisons) == Counter(r.request_id for r in requests)
    assert {(c.primary_model, c.shadow_model) for c in comparisons} == {("title-ranking@v1", "title-ranking@v2")}
    assert all(r.key == c.request_id.encode() for r, c in zip(out.records, comparisons))
    check_against_sides(comparisons, [codec.decode_shadow_result(r.value) for r in sides.records])


def synthetic_pair(i: int, rng, base_ms: int | None = None) -> tuple[ShadowResult, ShadowResult]:
    """Two sides of request ``kill-<i>``, scored ``i`` ms after ``base_ms`` (default: now).

    Scoring times near the wall clock, as real sides have: ticks expire entries by the clock, so
    sides from years ago would time out whenever a tick fell between them.
    """
    base_ms = int(time.time() * 1000) if base_ms is None else base_ms
    titles = [f"t-{n}" for n in range(12)]

    def ranking() -> dict:
        chosen = rng.sample(titles, 6)
        scores = sorted((round(rng.random(), 4) for _ in chosen), reverse=True)
        return {"ranking": [{"title": t, "score": s} for t, s in zip(chosen, scores)]}

    rid = f"kill-{i}"
    shadows = ("title-ranking@v2",)
    primary = ShadowResult("primary", rid, "title-ranking", "title-ranking@v1", "title-ranking@v1", list(shadows),
                           None, 1, "s1", "ok", ranking(), None, round(rng.random() * 5, 3), "live",
                           {"country": rng.choice(["US", "DE"]), "client": "demo"}, base_ms + i)
    shadow = ShadowResult("shadow", rid, "title-ranking", "title-ranking@v2", "title-ranking@v1", list(shadows),
                          None, 1, "shadow", "ok", ranking(), None, round(rng.random() * 5, 3), "live",
                          primary.context, base_ms + i + 1)
    return primary, shadow


def start_comparator(kafka, layout, rules_file, log_file) -> subprocess.Popen:
    env = {**os.environ, "SCORELINE_COMPARATOR_WINDOW_S": "300", "SCORELINE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "scoreline", "run", "--role", "comparator",
                             "--bootstrap", kafka.bootstrap, "--prefix", layout.prefix, "--rules", str(rules_file)],
                            stdout=subprocess.DEVNULL, stderr=log_file, env=env)


class SideStream:
    """Both sides of ``pairs`` written to ``shadow-results`` at a pace (in either order), and the comparisons read back.

    ``stop_all`` stops every comparator process the test started, whatever happened.
    """

    def __init__(self, kafka, layout, pairs: list[tuple[ShadowResult, ShadowResult]]) -> None:
        self.kafka, self.layout, self.pairs = kafka, layout, pairs
        self.procs: list[subprocess.Popen] = []

    async def send_all(self, producer, gates: dict[int, asyncio.Event] | None = None) -> None:
        """Send every pair; before pair ``i`` of ``gates``, wait (bounded) until the test sets that gate.

        The gates put a fault mid-stream by construction rather than by timing: the sender holds at
        the gate until the fault has happened, so pairs are sent both before and after it.
        """
        for i, (primary, shadow) in enumerate(self.pairs):
            if gates and i in gates:
                await producer.flush()
                await asyncio.wait_for(gates[i].wait(), timeout=180)
            for s in ((primary, shadow) if i % 2 else (shadow, primary)):
                await producer.send(self.layout.shadow_results, codec.encode(s), key=s.request_id.encode())
            if i % 10 == 9:
                await producer.flush()
                await asyncio.sleep(0.05)  # pacing: 0.5 s per 100 pairs

    async def every_pair_compared(self, out, logs: Sequence[Path] = ()) -> None:
        """Wait (bounded) for a comparison of every pair; on failure show the end of each comparator's log."""
        ids = lambda: {codec.decode_comparison(r.value).request_id for r in out.records}  # noqa: E731
        assert await out.wait_for(lambda: len(ids()) >= len(self.pairs), timeout=60), \
            f"{len(self.pairs) - len(ids())} pairs without a comparison\n" + \
            "\n".join(f"{log.name}:\n{log.read_text()[-2000:]}" for log in logs if log.exists())
        await out.wait_for(lambda: False, timeout=3)  # a repeated comparison would land now

    def check(self, records) -> int:
        """The documented guarantee: at least once, a repeat the same record byte for byte; returns the repeats."""
        by_id: dict[str, list[bytes]] = {}
        for r in records:
            by_id.setdefault(codec.decode_comparison(r.value).request_id, []).append(r.value)
        assert set(by_id) == {p.request_id for p, _ in self.pairs}
        assert all(len(set(values)) == 1 for values in by_id.values())
        check_against_sides([codec.decode_comparison(values[0]) for values in by_id.values()],
                            [s for pair in self.pairs for s in pair])
        return sum(len(v) - 1 for v in by_id.values())

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def comparator_setup(kafka, layout, shadow_all_rules, tmp_path, total: int, seed: int) -> tuple:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(orjson.dumps({"version": 1, **_rules_body(layout)}).decode())
    await ensure_topics(kafka.bootstrap, layout.specs(shadow_all_rules.shards))
    rng, now_ms = random.Random(seed), int(time.time() * 1000)
    return rules_file, SideStream(kafka, layout, [synthetic_pair(i, rng, now_ms) for i in range(total)])


@pytest.mark.kafka
@pytest.mark.parametrize("after_commit", [False, True], ids=["before-first-commit", "after-a-commit"])
async def test_sigkill_loses_no_pair_and_repeats_only_identical_ones(kafka, layout, shadow_all_rules, tmp_path,
                                                                       after_commit):
    """SIGKILL mid-stream, restart: every pair compared, repeats identical.

    Both ways faust 0.15's table recovery lost sides are covered (``streams/services/faust_recovery.py``):
    killed at the first comparison, no offset is committed yet, so the restarted app must start
    from the log start rather than where its prefetch left the partition; killed once an offset is
    committed, it must resume from that offset without clearing what it fetched meanwhile.
    """
    rules_file, sides = await comparator_setup(kafka, layout, shadow_all_rules, tmp_path, total=600, seed=5)
    log_path = tmp_path / "comparator.log"
    try:
        with log_path.open("w") as log_file:
            sides.procs.append(start_comparator(kafka, layout, rules_file, log_file))
        await wait_for_log(log_path, "scoreline running", 90, sides.procs[-1])
        async with TopicTail(kafka, [layout.shadow_comparisons]) as out:
            producer = aiokafka_producer(kafka, "test-sides")
            await producer.start()
            killed = asyncio.Event()
            sender = asyncio.create_task(sides.send_all(producer, {len(sides.pairs) // 2: killed}))
            try:
                assert await out.wait_for(lambda: len(out.records) >= 1, timeout=90)
                if after_commit:
                    await wait_committed(kafka, f"{layout.prefix}comparator", layout.shadow_results,
                                         layout.shard_partitions)
                sides.procs[-1].send_signal(signal.SIGKILL)
                sides.procs[-1].wait(timeout=30)
                killed_at = len(out.records)
                killed.set()
                await sender
                with log_path.open("a") as log_file:
                    sides.procs.append(start_comparator(kafka, layout, rules_file, log_file))
                await wait_for_log(log_path, "scoreline running", 90, sides.procs[-1])
                await sides.every_pair_compared(out)
            finally:
                await producer.stop()
    finally:
        sides.stop_all()

    assert killed_at < len(sides.pairs), "the kill did not land mid-stream"
    print(f"kill after {killed_at} comparisons; {sides.check(out.records)} repeated")


@pytest.mark.kafka
async def test_a_second_comparator_joining_then_the_first_leaving_loses_no_pair(kafka, layout, shadow_all_rules,
                                                                                 tmp_path):
    """Scale out to two comparators mid-stream, then back to one: two rebalances, no pair lost.

    Each rebalance runs the table recovery (``streams/services/faust_recovery.py``) on the partitions
    that move. On a loaded machine the second one once stalled for good on the changelog partition
    taken over, while faust's consumer read the changelog; the recovery now reads it with the
    transport's reader. The guarantee is the documented one: at least once, a repeat byte for byte
    the same.
    """
    rules_file, sides = await comparator_setup(kafka, layout, shadow_all_rules, tmp_path, total=900, seed=7)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    try:
        with logs[0].open("w") as log_file:
            sides.procs.append(start_comparator(kafka, layout, rules_file, log_file))
        await wait_for_log(logs[0], "scoreline running", 90, sides.procs[0])
        async with TopicTail(kafka, [layout.shadow_comparisons]) as out:
            producer = aiokafka_producer(kafka, "test-sides")
            await producer.start()
            joined, left = asyncio.Event(), asyncio.Event()
            third = len(sides.pairs) // 3
            sender = asyncio.create_task(sides.send_all(producer, {third: joined, 2 * third: left}))
            try:
                assert await out.wait_for(lambda: len(out.records) >= 100, timeout=60)
                with logs[1].open("w") as log_file:
                    sides.procs.append(start_comparator(kafka, layout, rules_file, log_file))
                await wait_for_log(logs[1], "scoreline running", 90, sides.procs[1])
                joined_at = len(out.records)
                joined.set()
                assert await out.wait_for(lambda: len(out.records) >= joined_at + 100, timeout=60)  # both at work
                sides.procs[0].send_signal(signal.SIGTERM)
                assert sides.procs[0].wait(timeout=60) == 0, logs[0].read_text()[-3000:]
                left_at = len(out.records)
                left.set()
                await sender
                await sides.every_pair_compared(out, logs)
            finally:
                await producer.stop()
    finally:
        sides.stop_all()

    assert max(joined_at, left_at) < len(sides.pairs), (joined_at, left_at)  # both rebalances were mid-stream
    print(f"joined at {joined_at}, left at {left_at}; {sides.check(out.records)} repeated")


async def wait_committed(kafka, group: str, topic: str, partitions: int, timeout: float = 30) -> None:
    """Return once ``group`` has committed an offset above 0 on some partition of ``topic``."""
    from aiokafka import TopicPartition

    probe = aiokafka_consumer(kafka, group_id=group, role="test-committed")  # never joins: no subscribe
    await probe.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        deadline = asyncio.get_running_loop().time() + timeout
        while not any([(await probe.committed(tp)) or 0 for tp in tps]):
            assert asyncio.get_running_loop().time() < deadline, f"{group} committed nothing on {topic}"
            await asyncio.sleep(0.1)
    finally:
        await probe.stop()


def _rules_body(layout) -> dict:
    from scoreline.settings import EXAMPLES_DIR

    text = (EXAMPLES_DIR / "rules-shadow-all.json").read_text()
    return orjson.loads(text.replace('"scoreline.replies.', f'"{layout.prefix}replies.'))


@pytest.mark.kafka
async def test_a_side_without_partner_times_out(kafka, layout, shadow_all_rules):
    from streams.services.comparator import Comparator

    await ensure_topics(kafka.bootstrap, layout.specs(shadow_all_rules.shards))
    primary, _ = synthetic_pair(0, random.Random(1))
    async with TopicTail(kafka, [layout.shadow_comparisons]) as out, \
            Comparator(kafka, layout, window_s=1.0, tick_s=0.2) as comparator:
        await comparator.wait_assigned()
        producer = aiokafka_producer(kafka, "test-lone")
        await producer.start()
        try:
            lone = ShadowResult(**{**{f: getattr(primary, f) for f in primary.__slots__},
                                   "ts_ms": int(time.time() * 1000)})
            await producer.send_and_wait(layout.shadow_results, codec.encode(lone), key=lone.request_id.encode())
        finally:
            await producer.stop()
        assert await out.wait_for(lambda: out.records, timeout=60)
    (c,) = [codec.decode_comparison(r.value) for r in out.records]
    assert (c.request_id, c.matched, c.reason, c.primary_status, c.shadow_status) == (
        primary.request_id, False, Unmatched.TIMED_OUT, "ok", None)


@pytest.mark.kafka
async def test_a_backlog_older_than_the_window_is_compared_not_timed_out(kafka, layout, shadow_all_rules):
    """Sides written while the comparator was down (longer than its window) still find their partners."""
    from streams.services.comparator import Comparator

    await ensure_topics(kafka.bootstrap, layout.specs(shadow_all_rules.shards))
    rng, total = random.Random(9), 150
    pairs = [synthetic_pair(i, rng, int(time.time() * 1000) - 30_000) for i in range(total)]
    # Ticks written before the crash and not yet processed are read again, interleaved with the backlog.
    ticks = f"{layout.prefix}comparator-ticks"
    await ensure_topics(kafka.bootstrap, [TopicSpec(ticks, layout.shard_partitions)])
    producer = aiokafka_producer(kafka, "test-backlog")
    await producer.start()
    try:
        now = str(int(time.time() * 1000)).encode()
        for _ in range(50):
            for partition in range(layout.shard_partitions):
                await producer.send(ticks, now, partition=partition)
        # Every primary first, then every shadow: a partner is far behind its first side in the log.
        for s in [p for p, _ in pairs] + [s for _, s in pairs]:
            await producer.send(layout.shadow_results, codec.encode(s), key=s.request_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    async with TopicTail(kafka, [layout.shadow_comparisons]) as out, \
            Comparator(kafka, layout, window_s=1.0, tick_s=0.05) as comparator:
        await comparator.wait_assigned()
        assert await out.wait_for(lambda: len(out.records) >= total, timeout=60), len(out.records)
    comparisons = [codec.decode_comparison(r.value) for r in out.records]
    assert Counter(c.reason for c in comparisons) == Counter({None: total})
    check_against_sides(comparisons, [s for pair in pairs for s in pair])


@pytest.mark.kafka
async def test_a_side_committed_before_a_restart_finds_its_partner_after_it(kafka, layout, shadow_all_rules):
    """The table is restored from its changelog: a first side whose offset is committed is not read again.

    Every primary is processed and committed by one comparator, which stops; a new one (a new
    process's memory) gets only the shadows. Each pair is compared (the window is 5 minutes, so
    nothing times out here): the primaries can only have come back from the changelog, read through
    the transport's reader.
    """
    from streams.services.comparator import Comparator
    from streams.transport.kafka import KafkaTransport

    await ensure_topics(kafka.bootstrap, layout.specs(shadow_all_rules.shards))
    rng, total = random.Random(11), 60
    pairs = [synthetic_pair(i, rng) for i in range(total)]
    group = f"{layout.prefix}comparator"
    parts = [TopicPartition(layout.shadow_results, p) for p in range(layout.shard_partitions)]
    producer = aiokafka_producer(kafka, "test-restore")
    await producer.start()
    lag = KafkaTransport(kafka).lag_reader("test-restore")
    await lag.start()
    try:
        async with TopicTail(kafka, [layout.shadow_comparisons]) as out:
            async with Comparator(kafka, layout, window_s=300) as first:
                await first.wait_assigned()
                for primary, _ in pairs:
                    await producer.send(layout.shadow_results, codec.encode(primary), key=primary.request_id.encode())
                await producer.flush()
                deadline = time.monotonic() + 60
                while sum((await lag.lag(group, parts)).values()):  # every primary processed and committed
                    assert time.monotonic() < deadline, await lag.lag(group, parts)
                    await asyncio.sleep(0.2)
            assert first.records >= total and not out.records
            async with Comparator(kafka, layout, window_s=300) as second:
                await second.wait_assigned()
                for _, shadow in pairs:
                    await producer.send(layout.shadow_results, codec.encode(shadow), key=shadow.request_id.encode())
                await producer.flush()
                assert await out.wait_for(lambda: len(out.records) >= total, timeout=60), len(out.records)
    finally:
        await lag.stop()
        await producer.stop()
    comparisons = [codec.decode_comparison(r.value) for r in out.records]
    assert sorted(c.request_id for c in comparisons) == sorted(p.request_id for p, _ in pairs)
    check_against_sides(comparisons, [s for pair in pairs for s in pair])


def _is_faust(task: asyncio.Task) -> bool:
    """Whether ``task`` runs code of faust or of mode, its service library: the comparator's work."""
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and any(f"/{package}/" in code.co_filename for package in ("faust", "mode"))


def _runs_side_work(task: asyncio.Task) -> bool:
    """Whether ``task`` belongs to a side role: the shadow worker, the rollout controller or the comparator."""
    return task.get_name() in ("scoreline-shadow", "rollout-controller") or _is_faust(task)


@pytest.mark.kafka
async def test_the_side_roles_run_on_their_own_loop_and_still_compare_every_request(kafka, layout, shadow_all_rules,
                                                                                      registry):
    """``scoreline run``'s layout: the live path's loop runs no shadow, comparator or controller task."""
    from streams.client.score_client import ScoreClient

    options = PipelineOptions(follow_rules=False, side_loop=True)
    async with Pipeline(kafka, layout, shadow_all_rules, registry, options) as pipeline:
        await pipeline.wait_ready()
        async with TopicTail(kafka, [layout.shadow_comparisons]) as out, \
                ScoreClient(kafka, "demo", layout=layout) as client:
            requests = [client.request("title-ranking", i.context, i.payload)
                        for i in sample_items("title-ranking", 30, seed=4)]
            results = await client.score_many(requests, timeout=60, return_exceptions=False)
            assert await out.wait_for(lambda: len(out.records) >= len(requests), timeout=60)
            live_loop = [t for t in asyncio.all_tasks() if _runs_side_work(t)]
            assert pipeline.side is not None
            side_loop = pipeline.side.tasks()
        names = {t.get_name() for t in side_loop}

    assert all(r.status == "ok" for r in results)
    assert live_loop == []
    assert {"scoreline-shadow", "rollout-controller"} <= names
    assert any(_is_faust(t) for t in side_loop)
    comparisons = [codec.decode_comparison(r.value) for r in out.records]
    assert Counter(c.request_id for c in comparisons) == Counter(r.request_id for r in requests)
    assert pipeline.side is None  # stopped with the pipeline
