"""Network faults between hosts of their own: a three-broker cluster, scoreline's roles and a client, each a namespace.

The layout (:data:`HOSTS`, made by :class:`netns.Network`):

- ``b1``, ``b2``, ``b3``: the three Kafka nodes (RF 3, min ISR 2), each listening on and
  advertising its host's address;
- ``h1``: ``scoreline run --role router --role shadow``; ``h2`` and ``h3``: ``scoreline run
  --role worker`` each, so every shard's consumer group has two members on two hosts;
- ``c``: the client, the process that runs the scenarios (``scripts/net_faults.py`` runs it
  there): the steady stream through ``ScoreClient`` and the tails that count what came back.

Each scenario streams requests at :data:`RATE` while one fault runs its course, then waits
(bounded) until every request is accounted for, and counts as the cluster scenarios do
(``cluster_scenarios.py``): sent, answered, dead-lettered, lost, duplicated, the longest gap
between two replies, and shadow copies left unpaired.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from cluster_scenarios import ClusterEnv, _unpaired, longest_gap, steady_stream
from cluster_scenarios import restore as restore_cluster
from fault_scenarios import Env, Ledger, Role, Tally, _workload, settle, watching
from netns import Network

from schemas import codec
from streams.broker.cluster import LocalCluster
from streams.broker.config import BrokerSettings
from streams.client.score_client import ScoreClient, ScoreTimeout
from streams.transport.settings import KafkaSettings
from streams.transport.tail import TopicTail
from workflows import ModelRegistry

__all__ = ["BROKERS", "HOSTS", "NET_SCENARIOS", "NetEnv", "cluster_on", "net_tally"]

BROKERS = ("b1", "b2", "b3")
HOSTS = (*BROKERS, "h1", "h2", "h3", "c")
"""Every host, in address order (``10.213.77.1`` is ``b1``, ``.7`` is ``c``)."""
RATE = 40.0
"""Requests per second of the steady stream."""
CUT_S = 30.0
"""How long a cut lasts: three consumer session timeouts (10 s), past the broker session timeout (9 s)."""
SLOW_S = 60.0
"""How long the slow link lasts."""
SLOW_RATE, SLOW_QUEUE_MS = "256kbit", 200
"""The slow link: 256 kbit/s each way, at most 200 ms of queue (what waits longer is dropped)."""
SETTLE_S = 180.0
TAIL_S = 15.0
"""Seconds the client stream goes on after the network heals."""


@dataclasses.dataclass
class NetEnv(ClusterEnv):
    """A scenario's environment on the namespaced cluster (:class:`cluster_scenarios.ClusterEnv`), and its network."""

    net: Network

    @classmethod
    def on(cls, net: Network, cluster: LocalCluster, prefix: str, tmp: Path,
           registry: ModelRegistry | None = None) -> NetEnv:
        return cls(Env.make(KafkaSettings(bootstrap=cluster.bootstrap), prefix, tmp, registry), cluster, net)

    def role(self, host: str, role: str, *more: str) -> Role:
        """``scoreline run --role role [--role more ...]`` on ``host``."""
        extra = [arg for r in more for arg in ("--role", r)]
        return Role(self.env, role, name=f"{host}-{role}", args=extra, wrap=self.net.hosts[host].exec())

    async def start_roles(self) -> list[Role]:
        """Router and shadow on h1, a worker on h2 and on h3; once both workers hold partitions of every shard."""
        roles = [self.role("h1", "router", "shadow"), self.role("h2", "worker"), self.role("h3", "worker")]
        for role in roles:
            await role.start()
        await _workers_assigned(self.env, roles[1:])
        return roles


def cluster_on(net: Network, home: Path, heap: str = "384m") -> LocalCluster:
    """The three Kafka nodes, each in its broker host's namespace (not started)."""
    brokers = [net.hosts[name] for name in BROKERS]
    return LocalCluster(BrokerSettings(port=9092, nodes=3, home=home, heap=heap,
                                       node_hosts=tuple(h.address for h in brokers),
                                       node_netns=tuple(h.netns for h in brokers)))


async def _workers_assigned(env: Env, workers: list[Role], timeout: float = 90.0) -> None:
    """Until every worker process holds partitions of every shard's group (its log's last assignment is not empty).

    Read from the workers' own logs (aiokafka's "Setting newly assigned partitions" and "Revoking"
    lines), not asked of the group coordinator: after a partition heals, an admin client's
    ``DescribeGroups`` to a broker that was cut off was once refused for the whole 90 s while the
    group itself was stable.
    """
    groups = [f"{env.layout.prefix}worker.{shard}" for shard in env.rules.shards]
    deadline = time.monotonic() + timeout
    state: dict[str, dict[str, bool]] = {}
    while time.monotonic() < deadline:
        for worker in workers:
            held = state.setdefault(worker.log.stem, {})
            for line in worker.log.read_text(errors="replace").splitlines():
                try:
                    message = str(orjson.loads(line).get("msg", ""))
                except orjson.JSONDecodeError:
                    continue
                group = message.rsplit("for group ", 1)[-1]
                if group not in groups:
                    continue
                if message.startswith("Setting newly assigned partitions {TopicPartition"):
                    held[group] = True
                elif message.startswith(("Setting newly assigned partitions", "Revoking previously assigned")):
                    held[group] = False
        if all(state.get(w.log.stem, {}).get(g) for w in workers for g in groups):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"not every worker holds partitions of every shard after {timeout:.0f} s: {state}")


async def _run(nenv: NetEnv, scenario: str, fault_text: str, fault: Callable[[], Awaitable[None]]) -> Tally:
    """Router and shadow on h1, a worker on h2 and on h3, a steady stream from c, ``fault`` in the middle."""
    env, ledger, net = nenv.env, Ledger(), nenv.net
    roles: list[Role] = []
    try:
        roles = await nenv.start_roles()
        async with watching(env, ledger) as tail, \
                TopicTail(env.kafka, [env.layout.shadow_results], on_record=ledger.on_side) as sides:
            await steady_stream(env, ledger, fault)
            await settle(tail, ledger, timeout=SETTLE_S)
            await sides.wait_for(lambda: not _unpaired(ledger), timeout=60.0)
        died = [f"{r.log.stem} exited {p.returncode}" for r in roles for p in r.procs if p.poll() is not None]
    finally:
        net.heal()
        for role in roles:
            role.stop_all()
    tally = ledger.tally(scenario, fault_text, note="; ".join(died))
    tally.longest_gap_s = longest_gap(ledger)
    tally.longest_wait_s = _longest_wait(ledger)
    tally.shadowed, tally.shadow_unpaired = len(ledger.sides), _unpaired(ledger)
    return tally


def _longest_wait(ledger: Ledger) -> float | None:
    """The longest time from a request's first publish to its first reply or dead letter."""
    first: dict[str, float] = {}
    for at, result in ledger.results:
        first.setdefault(result.request_id, at)
    for at, rid in ledger.dead:
        if rid:
            first[rid] = min(at, first.get(rid, at))
    waits = [first[rid] - sent for rid, sent in ledger.sent.items() if rid in first]
    return round(max(waits), 2) if waits else None


def _for_a_while(start: Callable[[], Any], stop: Callable[[], Any], seconds: float) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        await start() if asyncio.iscoroutinefunction(start) else start()
        try:
            await asyncio.sleep(seconds)
        finally:
            stop()
    return fault


async def worker_cut_off(nenv: NetEnv) -> Tally:
    """The worker host h2 loses every broker (both ways) for ``CUT_S``, then the network heals."""
    return await _run(nenv, "worker_cut_off", f"worker host h2 cut off from the three brokers for {CUT_S:.0f} s",
                      _for_a_while(lambda: nenv.net.cut("h2", BROKERS), nenv.net.heal, CUT_S))


async def leader_isolated(nenv: NetEnv) -> Tally:
    """The busiest leader's broker loses the other two brokers (clients still reach it) for ``CUT_S``."""
    async def isolate() -> None:
        node = f"b{await nenv.busiest_leader()}"
        nenv.net.cut(node, [b for b in BROKERS if b != node])
    return await _run(nenv, "leader_isolated",
                      f"the busiest leader's broker cut off from the other two, not from clients, for {CUT_S:.0f} s",
                      _for_a_while(isolate, nenv.net.heal, CUT_S))


async def worker_one_way(nenv: NetEnv) -> Tally:
    """h2's packets to the brokers are lost, theirs to h2 delivered, for ``CUT_S``."""
    return await _run(nenv, "worker_one_way",
                      f"worker host h2's packets to the brokers dropped (theirs delivered) for {CUT_S:.0f} s",
                      _for_a_while(lambda: nenv.net.cut("h2", BROKERS, both=False), nenv.net.heal, CUT_S))


async def router_slow_link(nenv: NetEnv) -> Tally:
    """The router host's link at ``SLOW_RATE`` with at most ``SLOW_QUEUE_MS`` of queue, for ``SLOW_S``."""
    return await _run(nenv, "router_slow_link",
                      f"router host h1's link at {SLOW_RATE}/s each way, {SLOW_QUEUE_MS} ms of queue, "
                      f"for {SLOW_S:.0f} s",
                      _for_a_while(lambda: nenv.net.slow("h1", SLOW_RATE, SLOW_QUEUE_MS),
                                   lambda: nenv.net.fast("h1"), SLOW_S))


async def client_cut_off(nenv: NetEnv) -> Tally:
    """The client host loses the brokers for ``CUT_S`` with requests in flight.

    The client waits as a user does (``ScoreClient.score_request`` with a 10 s timeout, no
    republishing): a request the caller was told about (``ScoreTimeout``) may still be
    published once the network heals, by the producer's own retries. What must hold: every
    request that reached the request topic is answered (or dead-lettered), none is there twice,
    and every caller got a result or an exception, none waited forever.
    """
    env, net, ledger = nenv.env, nenv.net, Ledger()
    roles: list[Role] = []
    outcomes: dict[str, str] = {}
    waits: list[float] = []
    healed_at: float | None = None
    try:
        roles = await nenv.start_roles()
        async with watching(env, ledger) as tail:
            async with ScoreClient(env.kafka, "demo", layout=env.layout) as client:
                async def one(objective: str, context: dict, payload: dict) -> None:
                    request = client.request(objective, context, payload)
                    began = time.monotonic()
                    try:
                        await client.score_request(request, timeout=10.0)
                        outcomes[request.request_id] = "answered"
                        waits.append(time.monotonic() - began)
                    except ScoreTimeout:
                        outcomes[request.request_id] = "timeout"
                    except Exception as exc:  # noqa: BLE001 - counted, whatever it is
                        outcomes[request.request_id] = type(exc).__name__

                tasks: list[asyncio.Task] = []
                began = time.monotonic()
                for i, (objective, context, payload) in enumerate(_workload(100_000, 7)):
                    now = time.monotonic()
                    if healed_at is None and ledger.results and now - began > 5.0:
                        ledger.fault_at = now
                        net.cut("c", BROKERS)
                        healed_at = now + CUT_S
                    if healed_at is not None and now >= healed_at and net.cuts:
                        net.heal()
                    if healed_at is not None and now >= healed_at + TAIL_S:
                        break
                    tasks.append(asyncio.create_task(one(objective, context, payload)))
                    await asyncio.sleep(max(0.0, began + (i + 1) / RATE - time.monotonic()))
                await asyncio.gather(*tasks)
            published = await _published_ids(env)
            ledger.sent = {rid: 0.0 for rid in published}  # what must be accounted for
            await settle(tail, ledger, timeout=SETTLE_S)
    finally:
        net.heal()
        for role in roles:
            role.stop_all()
    told = {k: list(outcomes.values()).count(k) for k in sorted(set(outcomes.values()))}
    twice = sum(1 for n in published.values() if n > 1)
    tally = ledger.tally("client_cut_off", f"client host cut off from the brokers for {CUT_S:.0f} s",
                         note=f"callers: {told}; {len(published)} of {len(outcomes)} published, "
                              f"{twice} published twice, {len(set(published) - set(outcomes))} unknown ids")
    tally.requests = len(outcomes)
    tally.lost += len(set(outcomes) - set(published) - {r for r, o in outcomes.items() if o != "answered"})
    tally.inconsistent += twice + len(set(published) - set(outcomes))
    tally.longest_wait_s = round(max(waits), 2) if waits else None
    tally.longest_gap_s = longest_gap(ledger)
    return tally


async def _published_ids(env: Env) -> dict[str, int]:
    """How many times each request id was published, on the shared request topic or the client's own."""
    from streams.transport.topic_reader import read_topic

    counts: dict[str, int] = {}
    for topic in (env.layout.requests, env.layout.client_requests("demo")):
        try:
            records = await read_topic(env.kafka, topic, timeout=60.0)
        except LookupError:
            continue  # the client's own topic exists only where a client publishes to it
        for record in records:
            rid = codec.decode_request(record.value).request_id
            counts[rid] = counts.get(rid, 0) + 1
    return counts


def net_tally(tally: Tally) -> dict[str, Any]:
    """The JSON row of ``scripts/net_faults.py``: the issue's names beside the tally's."""
    row = tally.row()
    row.update(sent=tally.requests, answered=tally.results, dead_lettered=tally.dead_letters)
    return row


async def restore(nenv: NetEnv) -> None:
    """The network whole (no cut, no slow link) and the cluster whole again, for the next scenario."""
    nenv.net.heal()
    nenv.net.fast("h1")
    await restore_cluster(nenv.cluster)


NET_SCENARIOS: dict[str, Callable[[NetEnv], Awaitable[Tally]]] = {
    "worker_cut_off": worker_cut_off,
    "leader_isolated": leader_isolated,
    "worker_one_way": worker_one_way,
    "router_slow_link": router_slow_link,
    "client_cut_off": client_cut_off,
}
