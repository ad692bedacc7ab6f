"""Fault-injection scenarios against a real broker, shared by the tests and ``scripts/fault_report.py``.

Each scenario runs a steady stream of requests through a pipeline, injects one fault
(a ``kill -9``, a broker restart, a rebalance, a poison request, a slow workflow), waits —
with a deadline, never a fixed sleep — until every request is accounted for, and returns a
:class:`Tally`: requests sent, results, dead letters, lost, duplicated, and how long the
pipeline took to answer again after the fault.

"Accounted for" is the delivery contract of ``docs/architecture.md``: every request ends as a
result on its ``reply_to`` or a dead-letter record (or both). A duplicate is a second result
for a request id already answered (at-least-once replay); it must name the same model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from routing import Rules, parse_rules, rules_to_doc
from schemas import codec
from schemas.messages import Status
from scoreline.settings import EXAMPLES_DIR
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.services.worker import Worker
from streams.topics import TopicLayout
from streams.transport.settings import KafkaSettings
from streams.transport.tail import TopicTail
from workflows import Item, ModelRegistry, Outcome, sample_items

__all__ = ["Env", "Tally", "SCENARIOS", "free_port_pair", "free_port_run", "span"]

REQUESTS = 240
"""Requests per scenario: enough for batches on both sides of the fault, small enough for 2 cores."""
SETTLE_TIMEOUT = 90.0
"""Longest wait for the last request to be accounted for after a fault."""
"""Whether ``scoreline run --role comparator`` exists yet (scenario c needs it)."""


@dataclass
class Env:
    """What a scenario runs against: a broker, a topic prefix of its own, rules and models."""

    kafka: KafkaSettings
    layout: TopicLayout
    rules: Rules
    shadow_rules: Rules
    registry: ModelRegistry
    tmp: Path

    @classmethod
    def make(cls, kafka: KafkaSettings, prefix: str, tmp: Path, registry: ModelRegistry | None = None) -> Env:
        """An environment under ``prefix`` with the shipped example rules, reply topics moved under it."""
        layout = TopicLayout(prefix=prefix, request_partitions=2, shard_partitions=2, reply_partitions=2)
        return cls(kafka=kafka, layout=layout, rules=rules_under(layout), shadow_rules=rules_under(layout,
                   "rules-shadow-all.json"), registry=registry or ModelRegistry.default(), tmp=tmp)

    def rules_file(self, rules: Rules | None = None) -> Path:
        """The rules as a file, for ``scoreline run --rules`` subprocesses."""
        path = self.tmp / f"rules-{(rules or self.rules).version}-{id(rules)}.json"
        path.write_bytes(orjson.dumps(rules_to_doc(rules or self.rules)))
        return path


@dataclass
class Tally:
    """What one scenario produced, request by request."""

    scenario: str
    fault: str
    requests: int = 0
    results: int = 0
    dead_letters: int = 0
    lost: int = 0
    duplicated: int = 0
    """Results beyond the first for a request id (at-least-once replays)."""
    inconsistent: int = 0
    """Duplicates naming another model than their original, or results for ids never sent."""
    recovery_s: float | None = None
    """From the fault to the first result of a request sent after it."""
    longest_gap_s: float | None = None
    """The longest a client waited between two replies while the stream ran (the cluster scenarios)."""
    longest_wait_s: float | None = None
    """The longest one request waited for its first reply (the network scenarios)."""
    shadowed: int | None = None
    """Requests copied to a shadow candidate (the cluster scenarios)."""
    shadow_unpaired: int | None = None
    """Of those, how many have no shadow side: a shadow copy lost or not scored."""
    statuses: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def row(self) -> dict[str, Any]:
        """The JSON / table form."""
        return dataclasses.asdict(self)


def rules_under(layout: TopicLayout, name: str = "rules.json") -> Rules:
    """A shipped rules file with its reply topics moved under the layout's prefix."""
    text = (EXAMPLES_DIR / name).read_text().replace('"scoreline.replies.', f'"{layout.prefix}replies.')
    return parse_rules(orjson.loads(text))


# -- the stream and the bookkeeping ------------------------------------------------------------


class Ledger:
    """Requests sent (with when), results and dead letters seen (with when they arrived)."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.results: list[tuple[float, Any]] = []
        self.dead: list[tuple[float, str | None]] = []
        self.fault_at: float | None = None
        self.sides: dict[str, set[str]] = {}

    def on_result(self, record) -> None:
        self.results.append((time.monotonic(), codec.decode_result(record.value)))

    def on_dead_letter(self, record) -> None:
        self.dead.append((time.monotonic(), orjson.loads(record.value).get("request_id")))

    def on_side(self, record) -> None:
        side = codec.decode_shadow_result(record.value)
        self.sides.setdefault(side.request_id, set()).add(side.role)

    def paired(self) -> int:
        """Requests with both their primary and shadow side on shadow-results."""
        return sum(1 for roles in self.sides.values() if {"primary", "shadow"} <= roles)

    def on_comparison(self, record) -> None:
        # A comparison is the comparator's "result" for a shadowed request: count it as one.
        self.results.append((time.monotonic(), codec.decode_comparison(record.value)))

    def accounted(self) -> set[str]:
        return {r.request_id for _, r in self.results} | {rid for _, rid in self.dead if rid}

    def all_accounted(self) -> bool:
        return set(self.sent) <= self.accounted()

    def tally(self, scenario: str, fault: str, note: str = "") -> Tally:
        counts = Counter(r.request_id for _, r in self.results)
        first_model: dict[str, str | None] = {}
        inconsistent = sum(1 for rid in counts if rid not in self.sent)
        for _, result in self.results:
            model_of = getattr(result, "model", None) or getattr(result, "shadow_model", None)
            model = first_model.setdefault(result.request_id, model_of)
            if model != model_of:
                inconsistent += 1
        recovery = None
        if self.fault_at is not None:
            after = [at for at, r in self.results if self.sent.get(r.request_id, 0.0) > self.fault_at]
            recovery = round(min(after) - self.fault_at, 2) if after else None
        return Tally(
            scenario=scenario, fault=fault, requests=len(self.sent), results=len(counts),
            dead_letters=len({rid for _, rid in self.dead if rid in self.sent}),
            lost=len(set(self.sent) - self.accounted()),
            duplicated=sum(n - 1 for n in counts.values()), inconsistent=inconsistent, recovery_s=recovery,
            statuses=dict(Counter(getattr(r, "status", None) or ("matched" if r.matched else r.reason)
                                  for _, r in self.results)), note=note,
        )


def _workload(n: int, seed: int, mark: Callable[[int, dict], None] | None = None,
              objectives: Sequence[str] = ("title-ranking", "fraud-score")) -> list[tuple[str, dict, dict]]:
    per = [[(o, i) for i in sample_items(o, -(-n // len(objectives)), seed=seed)] for o in objectives]
    # Interleave the objectives so every shard sees traffic throughout the stream.
    items = [x for group in zip(*per) for x in group][:n]
    out = []
    for i, (objective, item) in enumerate(items):
        context = dict(item.context)
        if mark is not None:
            mark(i, context)
        out.append((objective, context, dict(item.payload)))
    return out


async def stream(env: Env, ledger: Ledger, *, faults: dict[int, Callable[[], Awaitable[None]]] | None = None,
                 n: int = REQUESTS, seed: int = 7, mark: Callable[[int, dict], None] | None = None,
                 deadline_ms: int | None = None, objectives: Sequence[str] = ("title-ranking", "fraud-score"),
                 pace_every: int = 10, pace_s: float = 0.02) -> None:
    """Publish ``n`` requests at a steady pace; after the i-th, run ``faults[i]`` (the first one is "the fault").

    A publish the broker refuses is retried with the same request (and request id), as a client
    author should: that is also how a broker outage shows up here.
    """
    async with ScoreClient(env.kafka, "demo", layout=env.layout) as client:
        pending: list[tuple[Any, asyncio.Future]] = []
        for i, (objective, context, payload) in enumerate(_workload(n, seed, mark, objectives)):
            deadline = int(time.time() * 1000) + deadline_ms if deadline_ms is not None else None
            request = client.request(objective, context, payload, deadline_ms=deadline)
            ledger.sent[request.request_id] = time.monotonic()
            pending.append((request, await _submit(client, request)))
            if faults and i + 1 in faults:
                if ledger.fault_at is None:
                    ledger.fault_at = time.monotonic()
                await faults[i + 1]()
            if i % pace_every == 0:
                await asyncio.sleep(pace_s)  # a steady stream, not one burst
        for _ in range(20):
            outcomes = await asyncio.gather(*(ack for _, ack in pending), return_exceptions=True)
            refused = [request for (request, _), out in zip(pending, outcomes) if isinstance(out, BaseException)]
            if not refused:
                break
            pending = [(request, await _submit(client, request)) for request in refused]


async def _submit(client: ScoreClient, request, timeout: float = 60.0) -> asyncio.Future:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.submit_request(request)
        except Exception:  # KafkaUnavailable while the broker is away: publish again, for a while
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def watching(env: Env, ledger: Ledger, *, comparisons: bool = False):
    """Tail the reply topic and the dead-letter topic (or the comparison topic) into ``ledger``."""
    if comparisons:
        async with TopicTail(env.kafka, [env.layout.shadow_comparisons], on_record=ledger.on_comparison) as tail, \
                TopicTail(env.kafka, [env.layout.shadow_results], on_record=ledger.on_side):
            yield tail
        return
    async with TopicTail(env.kafka, [env.layout.replies("demo")], on_record=ledger.on_result) as replies, \
            TopicTail(env.kafka, [env.layout.deadletter], on_record=ledger.on_dead_letter):
        yield replies


async def settle(tail: TopicTail, ledger: Ledger, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until every request sent is accounted for (or the deadline passes; the tally shows what is lost)."""
    await tail.wait_for(ledger.all_accounted, timeout=timeout)


async def drop_topics(kafka: KafkaSettings, prefix: str) -> None:
    """Delete every topic under ``prefix`` (what a scenario run by a script leaves behind)."""
    admin = kafka.admin()
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


# -- processes ---------------------------------------------------------------------------------


class Role:
    """``scoreline run --role <role>`` as a separate process, as an operator runs it."""

    def __init__(self, env: Env, role: str, rules: Rules | None = None, name: str | None = None,
                 args: Sequence[str] = (), wrap: Sequence[str] = ()) -> None:
        """``args`` go after the command's own; ``wrap`` before it (``ip netns exec HOST``: another host)."""
        self.env, self.role, self.rules, self.args, self.wrap = env, role, rules, tuple(args), tuple(wrap)
        self.log = env.tmp / f"{name or role}.log"
        self.procs: list[subprocess.Popen] = []

    async def start(self, timeout: float = 90.0) -> None:
        """Start one more process and return once it says it is running."""
        before = self.log.read_text(errors="replace").count("scoreline running on") if self.log.exists() else 0
        proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "scoreline", "run", "--role", self.role,
             "--bootstrap", self.env.kafka.bootstrap, "--prefix", self.env.layout.prefix,
             "--rules", str(self.env.rules_file(self.rules)), *self.args],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
            env={**os.environ, "SCORELINE_LOG_LEVEL": "INFO", "SCORELINE_METRICS_PORT": "0",
                 "SCORELINE_SHARD_PARTITIONS": str(self.env.layout.shard_partitions),
                 "SCORELINE_REQUEST_PARTITIONS": str(self.env.layout.request_partitions),
                 "SCORELINE_REPLY_PARTITIONS": str(self.env.layout.reply_partitions)},
        )
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count("scoreline running on") <= before:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.role} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """``kill -9`` the newest process: no shutdown, no commit, no flush."""
        proc = self.procs[-1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    async def stop_oldest(self, timeout: float = 45.0) -> int:
        """SIGTERM the oldest running process, as Kubernetes stops a pod, and wait; returns its exit status."""
        proc = next(p for p in self.procs if p.poll() is None)
        proc.terminate()
        return await asyncio.to_thread(proc.wait, timeout)

    def stop_all(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


async def _first_answer(tail: TopicTail, ledger: Ledger) -> None:
    # Inject the fault mid-stream, once the pipeline has answered something, not before it ran.
    assert await tail.wait_for(lambda: bool(ledger.results), timeout=60), "no result before the fault"


# -- the scenarios -----------------------------------------------------------------------------


async def _kill_and_restart(env: Env, role: str, in_process: tuple[str, ...], scenario: str) -> Tally:
    """Run ``role`` as a process beside ``in_process`` roles; ``kill -9`` it mid-stream, start another."""
    ledger = Ledger()
    processes = Role(env, role)
    async with Pipeline(env.kafka, env.layout, env.rules, env.registry, PipelineOptions(roles=in_process)) as p:
        await p.wait_ready()
        try:
            await processes.start()
            async with watching(env, ledger) as tail:
                async def fault() -> None:
                    await _first_answer(tail, ledger)
                    processes.kill()
                    await processes.start()
                await stream(env, ledger, faults={REQUESTS // 3: fault})
                await settle(tail, ledger)
        finally:
            processes.stop_all()
    return ledger.tally(scenario, f"kill -9 the {role} process; start another")


async def rolling_upgrade(env: Env) -> Tally:
    """(h) replace both worker processes one at a time, old out first, as the Helm chart's rolling update does.

    Each old process gets SIGTERM (it finishes and commits the batches in hand, then leaves its
    groups) while requests keep coming; the new one starts once the old one has exited.
    """
    ledger = Ledger()
    workers = Role(env, "worker")
    exits: list[int] = []
    async with Pipeline(env.kafka, env.layout, env.rules, env.registry, PipelineOptions(roles=("router",))) as p:
        await p.wait_ready()
        try:
            for _ in range(2):
                await workers.start()
            async with watching(env, ledger) as tail:
                async def upgrade() -> None:
                    await _first_answer(tail, ledger)
                    for _ in range(2):
                        exits.append(await workers.stop_oldest())
                        await workers.start()

                upgrading: list[asyncio.Task[None]] = []

                async def begin() -> None:  # the upgrade runs beside the stream, not in a pause of it
                    upgrading.append(asyncio.create_task(upgrade()))

                await stream(env, ledger, faults={20: begin}, n=400, pace_every=5, pace_s=0.25)
                await upgrading[0]
                await settle(tail, ledger)
        finally:
            workers.stop_all()
    return ledger.tally("rolling_upgrade", "replace both worker processes one at a time (SIGTERM, then a new one)",
                        note=f"exit statuses of the stopped workers {exits}")


async def kill_worker(env: Env) -> Tally:
    """(a) ``kill -9`` a worker process mid-stream and start another."""
    return await _kill_and_restart(env, "worker", ("router",), "kill_worker")


async def kill_router(env: Env) -> Tally:
    """(b) ``kill -9`` the router process mid-stream and start another."""
    return await _kill_and_restart(env, "router", ("worker",), "kill_router")


async def kill_comparator(env: Env) -> Tally:
    """(c) ``kill -9`` the comparator mid-stream and start another: every shadowed request still compared."""
    ledger = Ledger()
    comparators = Role(env, "comparator", rules=env.shadow_rules)
    async with Pipeline(env.kafka, env.layout, env.shadow_rules, env.registry,
                        PipelineOptions(roles=("router", "worker", "shadow"))) as p:
        await p.wait_ready()
        try:
            await comparators.start()
            async with watching(env, ledger, comparisons=True) as tail:
                async def fault() -> None:
                    await _first_answer(tail, ledger)
                    comparators.kill()
                    await comparators.start()
                # Every request of the shadow-all rules is title-ranking, shadowed.
                await stream(env, ledger, faults={REQUESTS // 3: fault}, seed=11, objectives=("title-ranking",))
                await settle(tail, ledger)
        finally:
            comparators.stop_all()
    tally = ledger.tally("kill_comparator", "kill -9 the comparator process; start another",
                         note=f"counts comparisons, not replies; {ledger.paired()} requests had both sides")
    # The comparator's at-least-once promise is stronger than "same model": a repeat is the same record.
    first: dict[str, Any] = {}
    tally.inconsistent += sum(1 for _, c in ledger.results if first.setdefault(c.request_id, c) != c)
    return tally


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port p with p and p + 1 free (the local broker's client and controller ports)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port < 65000 and all(_free(host, p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no free port pair")


def free_port_run(n: int, host: str = "127.0.0.1") -> int:
    """A port p with p .. p + n - 1 all free (a local cluster's client and controller ports)."""
    for _ in range(200):
        port = free_port_pair(host)
        if port + n < 65000 and all(_free(host, p) for p in range(port, port + n)):
            return port
    raise RuntimeError(f"no run of {n} free ports")


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def second_broker(tmp: Path, **settings: Any):
    """A second local broker (not started) on a free port with its home under ``tmp``: never the shared one."""
    from streams.broker.local import DEFAULT_KAFKA_VERSION, BrokerSettings, LocalBroker, scoreline_home

    home = tmp / "broker-home"
    home.mkdir(parents=True, exist_ok=True)
    jars = scoreline_home() / f"kafka-{DEFAULT_KAFKA_VERSION}"
    if not (home / jars.name).exists():
        (home / jars.name).symlink_to(jars)  # reuse the cached jars; state stays under tmp
    return LocalBroker(BrokerSettings(port=free_port_pair(), home=home, heap="384m", **settings))


@contextlib.asynccontextmanager
async def private_broker(tmp: Path, **settings: Any):
    """A started :func:`second_broker`, stopped afterwards."""
    broker = second_broker(tmp, **settings)
    await asyncio.to_thread(broker.start, 180.0)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop, 30.0)


async def restart_broker(env: Env) -> Tally:
    """(d) stop the broker (a second one of our own) mid-stream and start it again."""
    ledger = Ledger()
    async with private_broker(env.tmp) as broker:
        env = dataclasses.replace(env, kafka=dataclasses.replace(env.kafka, bootstrap=broker.settings.bootstrap))
        async with Pipeline(env.kafka, env.layout, env.rules, env.registry,
                            PipelineOptions(roles=("router", "worker"))) as p:
            await p.wait_ready()
            async with watching(env, ledger) as tail:
                async def fault() -> None:
                    await _first_answer(tail, ledger)
                    await asyncio.to_thread(broker.stop, 30.0)
                    await asyncio.to_thread(broker.start, 180.0)
                await stream(env, ledger, faults={REQUESTS // 3: fault})
                await settle(tail, ledger, timeout=SETTLE_TIMEOUT + 60)
        failed = [s.role for s in p.services if s.failed]
    return ledger.tally("restart_broker", "stop the broker (SIGTERM) and start it again",
                        note=f"services failed: {failed}" if failed else "")


async def scale_workers(env: Env) -> Tally:
    """(e) scale every shard's workers from 1 to 3 and back to 1 mid-stream (two rounds of rebalances)."""
    ledger = Ledger()
    env = dataclasses.replace(env, layout=dataclasses.replace(env.layout, shard_partitions=3))
    extra: list[Worker] = []
    async with Pipeline(env.kafka, env.layout, env.rules, env.registry,
                        PipelineOptions(roles=("router", "worker"))) as p:
        await p.wait_ready()
        async with watching(env, ledger) as tail:
            async def up() -> None:
                await _first_answer(tail, ledger)
                for shard in env.rules.shards:
                    for _ in range(2):
                        extra.append(Worker(env.kafka, env.layout, env.registry, shard=shard,
                                            group_id=f"{env.layout.prefix}worker.{shard}"))
                await asyncio.gather(*(w.start() for w in extra))

            async def down() -> None:
                # A graceful scale-down: each leaving worker finishes and commits its batch, then leaves.
                await asyncio.gather(*(w.stop() for w in extra))

            try:
                await stream(env, ledger, faults={REQUESTS // 3: up, 2 * REQUESTS // 3: down})
                await settle(tail, ledger)
            finally:
                await down()
    return ledger.tally("scale_workers", "workers per shard 1 -> 3 -> 1 (rebalances) mid-stream")


class _FaultyModel:
    """A model that raises on items marked ``fault=poison`` or sleeps before scoring."""

    def __init__(self, model: Any, sleep_s: float) -> None:
        self._model, self._sleep_s = model, sleep_s
        self.id = model.id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def score_batch(self, items: Sequence[Item]) -> list[Outcome]:
        if any(item.context.get("fault") == "poison" for item in items):
            raise RuntimeError("poison request")
        if self._sleep_s:
            time.sleep(self._sleep_s)  # CPU-bound work holds the worker's loop, as a slow numpy call would
        return self._model.score_batch(items)


class FaultyRegistry:
    """Wraps a registry: every model it hands out is a :class:`_FaultyModel`."""

    def __init__(self, registry: ModelRegistry, *, sleep_s: float = 0.0) -> None:
        self._registry, self._sleep_s = registry, sleep_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def get(self, model_id: str, **options: Any) -> Any:
        return _FaultyModel(self._registry.get(model_id, **options), self._sleep_s)


POISON_EVERY = 40


async def poison_request(env: Env) -> Tally:
    """(f) a workflow that raises on one request in every ``POISON_EVERY``: isolated, answered, dead-lettered."""
    ledger = Ledger()
    poisoned: set[int] = set()

    def mark(i: int, context: dict) -> None:
        if i % POISON_EVERY == POISON_EVERY // 2:
            context["fault"] = "poison"
            poisoned.add(i)

    async with Pipeline(env.kafka, env.layout, env.rules, FaultyRegistry(env.registry),  # type: ignore[arg-type]
                        PipelineOptions(roles=("router", "worker"))) as p:
        await p.wait_ready()
        async with watching(env, ledger) as tail:
            await stream(env, ledger, mark=mark)
            await settle(tail, ledger)
            # The dead letters of the poison requests may land just after their error results.
            await tail.wait_for(lambda: len(ledger.dead) >= len(poisoned), timeout=30)
    tally = ledger.tally("poison_request", f"workflow raises on 1 request in {POISON_EVERY}")
    tally.note = f"{len(poisoned)} poisoned"
    return tally


SLOW_S = 0.3
SLOW_DEADLINE_MS = 400


async def slow_workflow(env: Env) -> Tally:
    """(g) a workflow slower than the requests' deadlines: late requests answered ``expired``, none lost."""
    ledger = Ledger()
    async with Pipeline(env.kafka, env.layout, env.rules, FaultyRegistry(env.registry, sleep_s=SLOW_S),  # type: ignore[arg-type]
                        PipelineOptions(roles=("router", "worker"))) as p:
        await p.wait_ready()
        async with watching(env, ledger) as tail:
            await stream(env, ledger, deadline_ms=SLOW_DEADLINE_MS)
            await settle(tail, ledger)
    return ledger.tally("slow_workflow", f"workflow sleeps {SLOW_S}s per batch; deadlines {SLOW_DEADLINE_MS}ms")


SCENARIOS: dict[str, Callable[[Env], Awaitable[Tally]]] = {
    "kill_worker": kill_worker,
    "kill_router": kill_router,
    "kill_comparator": kill_comparator,
    "restart_broker": restart_broker,
    "scale_workers": scale_workers,
    "poison_request": poison_request,
    "slow_workflow": slow_workflow,
    "rolling_upgrade": rolling_upgrade,
}


def check(tally: Tally) -> list[str]:
    """What is wrong with a tally (empty when the delivery contract held)."""
    problems = []
    if tally.requests == 0:
        problems.append("no requests sent")
    if tally.lost:
        problems.append(f"{tally.lost} of {tally.requests} requests lost")
    if tally.inconsistent:
        problems.append(f"{tally.inconsistent} duplicates disagree with their original or answer unknown ids")
    return problems


def span(values: Sequence[float | None]) -> str:
    """A figure over several runs: ``low-high``, one number when they agree, ``—`` when none has it."""
    known = [v for v in values if v is not None]
    if not known:
        return "—"
    low, high = min(known), max(known)
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


def markdown(tallies: Sequence[Tally]) -> str:
    """The per-scenario table of ``docs/reliability.md``."""
    gaps = any(t.longest_gap_s is not None for t in tallies)
    lines = ["| scenario | fault | requests | answered | dead letters | lost | duplicated | recovery (s) | "
             + ("longest gap (s) | " if gaps else "") + "outcomes |",
             "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if gaps else "") + "---|"]
    for t in tallies:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(t.statuses.items())) + (f"; {t.note}" if t.note else "")
        recovery = "—" if t.recovery_s is None else f"{t.recovery_s:.1f}"
        gap = ("—" if t.longest_gap_s is None else f"{t.longest_gap_s:.1f}") + " | " if gaps else ""
        lines.append(f"| {t.scenario} | {t.fault} | {t.requests} | {t.results} | {t.dead_letters} | {t.lost} "
                     f"| {t.duplicated} | {recovery} | {gap}{outcomes} |")
    return "\n".join(lines)


__all__ += ["Ledger", "Role", "FaultyRegistry", "check", "markdown", "stream", "settle", "watching", "Status"]
