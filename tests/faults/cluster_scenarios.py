"""Broker faults on a three-node cluster (RF 3, min ISR 2), for the tests and ``fault_report.py --cluster``.

Each scenario streams requests at a steady rate (both objectives, so both shards, with the
example rules' shadow traffic) through an in-process router, workers and shadow worker
connected to the whole cluster, while one broker fault runs its course: a ``kill -9`` of a
leader or of the active controller, a hung leader (``SIGSTOP`` past the session and
replica-lag timeouts), a rolling restart, two brokers down at once, a worker killed while a
leader is down. The stream keeps going for the whole fault and a little after it; then the
scenario waits (bounded) until every request is accounted for, brings every node back, and
waits until every replica is in sync again, so the next scenario starts on a whole cluster.

The tally is the single-broker suite's (:class:`fault_scenarios.Tally`) plus the longest gap a
client saw between two replies while the stream ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fault_scenarios import Env, Ledger, Role, Tally, _submit, _workload, settle, watching

from streams.broker.cluster import LocalCluster, active_controller, leader_counts
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.settings import KafkaSettings
from streams.transport.tail import TopicTail
from workflows import ModelRegistry

__all__ = ["CLUSTER_SCENARIOS", "ClusterEnv", "restore"]

RATE = 40.0
"""Requests per second of the steady stream: a few batches' worth in every second of a fault."""
TAIL_S = 3.0
"""Seconds the stream goes on after the fault is over, so requests sent after it are counted too."""
DOWN_S = 6.0
"""How long a killed broker stays down before it is started again."""
PAUSE_S = 20.0
"""How long a hung broker stays stopped: past the replica-lag (10 s) and broker session (9 s) timeouts."""
ISR_TIMEOUT = 120.0


@dataclasses.dataclass
class ClusterEnv:
    """A scenario's environment (:class:`fault_scenarios.Env`) on a local cluster it may fault."""

    env: Env
    cluster: LocalCluster

    @classmethod
    def make(cls, cluster: LocalCluster, prefix: str, tmp: Path, registry: ModelRegistry | None = None) -> ClusterEnv:
        return cls(Env.make(KafkaSettings(bootstrap=cluster.bootstrap), prefix, tmp, registry), cluster)

    def topics(self) -> list[str]:
        """The topics a request crosses on its way in: the request topics and every shard's work topic."""
        layout = self.env.layout
        return [layout.requests, layout.client_requests("demo"), layout.shadow,
                *(layout.shard(shard) for shard in self.env.rules.shards)]

    async def busiest_leader(self) -> int:
        """The node leading the most partitions of :meth:`topics`."""
        counts = await leader_counts(self.cluster.bootstrap, self.topics())
        assert counts, "the cluster did not say who leads what"
        return max(sorted(counts), key=lambda node: counts[node])

    def controller(self) -> int:
        live = [n for n in self.cluster.nodes if n.status().running]
        controller = active_controller(live)
        assert controller is not None, "no node records a quorum leader"
        return controller

    def kill(self, node_id: int) -> None:
        """``kill -9`` a node: no controlled shutdown, no flush."""
        self.cluster.node(node_id).send_signal(signal.SIGKILL)

    async def start(self, node_id: int) -> None:
        await asyncio.to_thread(self.cluster.start_node, node_id, 120.0)


async def restore(cluster: LocalCluster, timeout: float = ISR_TIMEOUT) -> None:
    """Every node running (resumed if paused) and every partition's replicas all in sync again."""
    for node in cluster.nodes:
        if node.status().running:
            node.send_signal(signal.SIGCONT)
    await asyncio.to_thread(cluster.start, 180.0)
    await wait_in_sync(cluster.bootstrap, timeout)


async def wait_in_sync(bootstrap: str, timeout: float = ISR_TIMEOUT, topics: list[str] | None = None) -> None:
    """Return once every partition (of ``topics``, default all) has all its replicas in sync."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    lagging: list[str] = []
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            names = topics if topics is not None else await admin.list_topics()
            lagging = [f"{t['topic']}:{p['partition']}" for t in await admin.describe_topics(names)
                       for p in t["partitions"] if set(p["isr"]) != set(p["replicas"]) or p["leader"] < 0]
            if not lagging:
                return
        except Exception as exc:  # noqa: BLE001 - a node still starting: ask again
            lagging = [repr(exc)]
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise AssertionError(f"replicas not back in sync after {timeout:.0f} s: {lagging[:10]}")


async def steady_stream(env: Env, ledger: Ledger, fault: Callable[[], Awaitable[None]], *,
                        rate: float = RATE, tail_s: float = TAIL_S, seed: int = 7) -> None:
    """Send requests at ``rate`` per second while ``fault`` runs and ``tail_s`` after it; republish refused ones.

    A publish the cluster refuses or times out (no leader, fewer in-sync replicas than
    ``min.insync.replicas``) is published again with the same request id, as a client author
    should; a request is "sent" from its first attempt.
    """
    workload = _workload(100_000, seed)
    async with ScoreClient(env.kafka, "demo", layout=env.layout) as client:
        async def publish(request: Any) -> None:
            await (await _submit(client, request, timeout=180.0))  # queued, then acknowledged by the leader

        pending: dict[str, tuple[Any, asyncio.Task]] = {}
        began = time.monotonic()
        fault_task: asyncio.Task | None = None
        fault_over: float | None = None
        for i, (objective, context, payload) in enumerate(workload):
            now = time.monotonic()
            if fault_task is None and ledger.results:  # the pipeline answers: now the fault
                ledger.fault_at = now
                fault_task = asyncio.create_task(fault())
            if fault_task is not None and fault_task.done():
                fault_task.result()  # a fault that failed to inject fails the scenario
                fault_over = fault_over or now
                if now - fault_over > tail_s:
                    break
            if fault_task is None and now - began > 60:
                raise AssertionError("no result within 60 s: the pipeline did not start")
            request = client.request(objective, context, payload)
            ledger.sent[request.request_id] = time.monotonic()
            pending[request.request_id] = (request, asyncio.create_task(publish(request)))
            await asyncio.sleep(max(0.0, began + (i + 1) / rate - time.monotonic()))
        for _ in range(20):
            outcomes = await asyncio.gather(*(task for _, task in pending.values()), return_exceptions=True)
            refused = [request for (request, _), out in zip(pending.values(), outcomes)
                       if isinstance(out, BaseException)]
            if not refused:
                return
            pending = {r.request_id: (r, asyncio.create_task(publish(r))) for r in refused}
        raise AssertionError(f"{len(pending)} requests never acknowledged by the cluster")


def longest_gap(ledger: Ledger) -> float | None:
    """The longest time between two consecutive replies, from the first reply to the last."""
    times = sorted(at for at, _ in ledger.results)
    return round(max(b - a for a, b in zip(times, times[1:])), 2) if len(times) > 1 else None


async def _run(cenv: ClusterEnv, scenario: str, fault_text: str, fault: Callable[[], Awaitable[None]], *,
               worker_process: Role | None = None) -> Tally:
    """The pipeline on the cluster, a steady stream, ``fault`` in the middle; every node back afterwards."""
    env, ledger = cenv.env, Ledger()
    roles = ("router", "shadow") if worker_process is not None else ("router", "worker", "shadow")
    try:
        async with Pipeline(env.kafka, env.layout, env.rules, env.registry, PipelineOptions(roles=roles)) as p:
            await p.wait_ready()
            if worker_process is not None:
                await worker_process.start()
            async with watching(env, ledger) as tail, \
                    TopicTail(env.kafka, [env.layout.shadow_results], on_record=ledger.on_side) as sides:
                await steady_stream(env, ledger, fault)
                await settle(tail, ledger, timeout=180.0)
                # A shadowed request's primary side is written with its reply; its shadow side may come later.
                await sides.wait_for(lambda: not _unpaired(ledger), timeout=60.0)
            failed = [s.role for s in p.services if s.failed]
            lag = await _lag(env, f"{env.layout.prefix}shadow", env.layout.shadow) if _unpaired(ledger) else None
    finally:
        if worker_process is not None:
            worker_process.stop_all()
        await restore(cenv.cluster)
    notes = [f"services failed: {failed}" if failed else "", f"shadow group lag per partition: {lag}" if lag else ""]
    tally = ledger.tally(scenario, fault_text, note="; ".join(n for n in notes if n))
    tally.longest_gap_s = longest_gap(ledger)
    tally.shadowed, tally.shadow_unpaired = len(ledger.sides), _unpaired(ledger)
    return tally


async def _lag(env: Env, group: str, topic: str) -> dict[int, tuple[int | None, int]]:
    """``group``'s committed offset and the end offset of each partition of ``topic``: why a side is missing."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=env.kafka.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(parts)
        return {tp.partition: (await consumer.committed(tp), ends[tp]) for tp in parts}
    finally:
        await consumer.stop()


def _unpaired(ledger: Ledger) -> int:
    """Shadowed requests (a primary side written) whose shadow copy was not scored."""
    return sum(1 for roles in ledger.sides.values() if roles != {"primary", "shadow"})


def _kill_for_a_while(cenv: ClusterEnv, which: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
    """The fault: kill -9 the node ``which`` names, start it again after ``DOWN_S``."""
    async def fault() -> None:
        node = await which()
        cenv.kill(node)
        await asyncio.sleep(DOWN_S)
        await cenv.start(node)
    return fault


async def kill_leader(cenv: ClusterEnv) -> Tally:
    """kill -9 the broker leading the most request and shard partitions; start it again after ``DOWN_S``."""
    return await _run(cenv, "kill_leader", f"kill -9 the busiest leader; start it after {DOWN_S:.0f} s",
                      _kill_for_a_while(cenv, cenv.busiest_leader))


async def kill_controller(cenv: ClusterEnv) -> Tally:
    """kill -9 the active controller (the quorum elects another); start it again after ``DOWN_S``."""
    async def controller() -> int:
        return cenv.controller()
    return await _run(cenv, "kill_controller", f"kill -9 the active controller; start it after {DOWN_S:.0f} s",
                      _kill_for_a_while(cenv, controller))


async def pause_leader(cenv: ClusterEnv) -> Tally:
    """SIGSTOP the busiest leader for ``PAUSE_S`` (a hung broker), then SIGCONT."""
    async def fault() -> None:
        node = cenv.cluster.node(await cenv.busiest_leader())
        node.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            node.send_signal(signal.SIGCONT)
    return await _run(cenv, "pause_leader", f"SIGSTOP the busiest leader for {PAUSE_S:.0f} s, then SIGCONT", fault)


async def rolling_restart(cenv: ClusterEnv) -> Tally:
    """Restart every node in turn (SIGTERM, a controlled shutdown), each after the replicas are back in sync."""
    async def fault() -> None:
        for node in cenv.cluster.nodes:
            await asyncio.to_thread(cenv.cluster.stop_node, node.node_id, 60.0)
            await cenv.start(node.node_id)
            await wait_in_sync(cenv.cluster.bootstrap)
    return await _run(cenv, "rolling_restart", "restart the three nodes one at a time, waiting for the ISR", fault)


async def two_down(cenv: ClusterEnv) -> Tally:
    """kill -9 two nodes (below ``min.insync.replicas`` and the quorum's majority); start one, then the other."""
    async def fault() -> None:
        first = await cenv.busiest_leader()
        second = next(n.node_id for n in cenv.cluster.nodes if n.node_id != first)
        cenv.kill(first)
        cenv.kill(second)
        await asyncio.sleep(DOWN_S)
        await cenv.start(first)  # a majority again: elections and writes resume
        await asyncio.sleep(DOWN_S)
        await cenv.start(second)
    return await _run(cenv, "two_down", f"kill -9 two nodes; start one after {DOWN_S:.0f} s, the other "
                      f"{DOWN_S:.0f} s later", fault)


async def worker_and_leader(cenv: ClusterEnv) -> Tally:
    """kill -9 a worker process while the busiest leader is down; start another worker, then the broker."""
    workers = Role(cenv.env, "worker")

    async def fault() -> None:
        node = await cenv.busiest_leader()
        cenv.kill(node)
        await asyncio.sleep(1.0)
        workers.kill()
        await workers.start()
        await asyncio.sleep(DOWN_S)
        await cenv.start(node)
    return await _run(cenv, "worker_and_leader", "kill -9 the busiest leader, then kill -9 the worker process "
                      "and start another; the broker back last", fault, worker_process=workers)


CLUSTER_SCENARIOS: dict[str, Callable[[ClusterEnv], Awaitable[Tally]]] = {
    "kill_leader": kill_leader,
    "kill_controller": kill_controller,
    "pause_leader": pause_leader,
    "rolling_restart": rolling_restart,
    "two_down": two_down,
    "worker_and_leader": worker_and_leader,
}
