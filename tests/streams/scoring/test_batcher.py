"""The dynamic batcher's rule: cost bounds, the queue delay, deadlines, one call in flight per model."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from streams.scoring.batcher import Lanes
from workflows.packaging import ServingSpec


class Req(NamedTuple):
    name: str
    payload: dict
    deadline_ms: float | None = None


def lanes_with(specs: dict[str, ServingSpec]) -> Lanes[Req, list[str]]:
    return Lanes(lambda model: specs.get(model, ServingSpec()), payload_of=lambda r: r.payload,
                 deadline_of=lambda r: r.deadline_ms)


class Calls:
    """A stand-in for the worker's calls: each returns at once with its requests' names."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[str]]] = []

    def start(self, model: str, batch: list[Req]) -> asyncio.Task[list[str]]:
        names = [r.name for r in batch]
        self.batches.append((model, names))

        async def call() -> list[str]:
            return names
        return asyncio.ensure_future(call())


def reqs(*names: str, candidates: int = 0, deadline_ms: float | None = None) -> list[Req]:
    payload = {"candidates": ["c"] * candidates} if candidates else {}
    return [Req(n, payload, deadline_ms) for n in names]


async def finish(lanes: Lanes) -> list[tuple[str, list]]:
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return [(model, [w.name for w in works]) for model, works, _ in lanes.returned()]


async def test_with_no_delay_an_idle_model_starts_at_once_and_later_arrivals_wait_for_the_call():
    lanes, calls = lanes_with({}), Calls()
    lanes.add("m", reqs("a", "b"), now=0.0)
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)
    lanes.add("m", reqs("c"), now=0.001)
    lanes.add("m", reqs("d"), now=0.002)
    assert lanes.start_due(calls.start, now=0.002, now_ms=2.0) == []  # one call in flight per model
    assert [w.name for w in lanes.works()] == ["a", "b", "c", "d"]  # all held back from the commit
    assert await finish(lanes) == [("m", ["a", "b"])]
    lanes.start_due(calls.start, now=0.003, now_ms=3.0)
    assert calls.batches == [("m", ["a", "b"]), ("m", ["c", "d"])]  # the queue, oldest first, in one call


async def test_a_batch_never_costs_more_than_the_bound_but_an_oversized_request_is_scored_alone():
    spec = ServingSpec(max_batch_cost=100, batch_cost="payload.candidates")
    lanes, calls = lanes_with({"ranker": spec}), Calls()
    lanes.add("ranker", [*reqs("a", "b", candidates=40), *reqs("c", candidates=30), *reqs("huge", candidates=500),
                         *reqs("d", candidates=10)], now=0.0)
    for step in range(4):
        lanes.start_due(calls.start, now=float(step), now_ms=step * 1000.0)
        await finish(lanes)
    assert calls.batches == [("ranker", ["a", "b"]), ("ranker", ["c"]), ("ranker", ["huge"]), ("ranker", ["d"])]
    costs = lanes.lane("ranker").costs
    assert (sum(costs.counts), costs.sum) == (4, 80 + 30 + 500 + 10)  # the batch cost histogram


async def test_the_queue_delay_gathers_a_fuller_batch_until_the_oldest_request_has_waited_it():
    spec = ServingSpec(max_batch_cost=3, max_queue_delay_us=2000)
    lanes, calls = lanes_with({"m": spec}), Calls()
    lanes.add("m", reqs("a"), now=10.0)
    assert lanes.start_due(calls.start, now=10.0, now_ms=0.0) == []
    assert abs(lanes.next_due(now=10.0005, now_ms=0.0) - 0.0015) < 1e-9  # the loop wakes when it is due
    lanes.add("m", reqs("b"), now=10.001)
    assert lanes.start_due(calls.start, now=10.001, now_ms=0.0) == []
    assert len(lanes.start_due(calls.start, now=10.002, now_ms=0.0)) == 1
    assert calls.batches == [("m", ["a", "b"])]


async def test_a_full_batch_does_not_wait_out_the_delay():
    lanes, calls = lanes_with({"m": ServingSpec(max_batch_cost=2, max_queue_delay_us=1_000_000)}), Calls()
    lanes.add("m", reqs("a", "b", "c"), now=0.0)
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)
    assert calls.batches == [("m", ["a", "b"])]


async def test_waiting_for_a_fuller_batch_never_makes_a_request_miss_its_deadline():
    lanes, calls = lanes_with({"m": ServingSpec(max_queue_delay_us=50_000)}), Calls()
    lane = lanes.lane("m")
    lane.observe(4.0)  # the model's calls take about 4 ms
    lanes.add("m", reqs("a", deadline_ms=1010.0), now=0.0)  # 10 ms left: it can wait 6 ms, not 50
    assert lanes.start_due(calls.start, now=0.0, now_ms=1000.0) == []
    assert abs(lanes.next_due(now=0.0, now_ms=1000.0) - 0.006) < 1e-9
    assert len(lanes.start_due(calls.start, now=0.006, now_ms=1006.0)) == 1


async def test_a_request_whose_deadline_passes_in_the_queue_is_handed_back_not_scored():
    lanes, calls = lanes_with({}), Calls()
    lanes.add("m", reqs("first"), now=0.0)
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)
    lanes.add("m", [*reqs("late", deadline_ms=5.0), *reqs("fine", deadline_ms=500.0), *reqs("no-deadline")], now=0.0)
    assert [(m, r.name) for m, r in lanes.expired(now_ms=10.0)] == [("m", "late")]
    await finish(lanes)
    lanes.start_due(calls.start, now=0.01, now_ms=10.0)
    assert calls.batches[-1] == ("m", ["fine", "no-deadline"])


async def test_models_batch_independently():
    lanes = lanes_with({"slow": ServingSpec(max_queue_delay_us=10_000)})
    calls = Calls()
    lanes.add("slow", reqs("s1"), now=0.0)
    lanes.add("fast", reqs("f1"), now=0.0)
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)
    assert calls.batches == [("fast", ["f1"])]  # the fast model does not wait for the slow one's delay
    assert bool(lanes)
    await finish(lanes)
    lanes.start_due(calls.start, now=0.02, now_ms=20.0)
    assert calls.batches[-1] == ("slow", ["s1"])
    await finish(lanes)
    assert not lanes  # nothing queued, nothing in flight


async def test_a_model_spec_is_read_again_when_its_lane_is_idle():
    specs = {"m": ServingSpec(max_batch_cost=1)}
    lanes, calls = lanes_with(specs), Calls()
    lanes.add("m", reqs("a", "b"), now=0.0)
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)
    await finish(lanes)
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)
    await finish(lanes)
    specs["m"] = ServingSpec(max_batch_cost=0)  # a reloaded manifest: no bound
    lanes.add("m", reqs("c", "d"), now=0.0)
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)
    assert calls.batches == [("m", ["a"]), ("m", ["b"]), ("m", ["c", "d"])]


async def test_calls_in_flight_are_answered_in_the_order_they_started_whichever_returns_first():
    lanes = lanes_with({"m": ServingSpec(max_batch_cost=1, max_calls_in_flight=2)})
    gates = [asyncio.Event(), asyncio.Event()]
    started: list[list[str]] = []

    def start(model: str, batch: list[Req]) -> asyncio.Task[list[str]]:
        gate = gates[len(started)] if len(started) < 2 else asyncio.Event()
        started.append([r.name for r in batch])

        async def call() -> list[str]:
            await gate.wait()
            return started[-1]
        return asyncio.ensure_future(call())

    lanes.add("m", reqs("a", "b", "c"), now=0.0)
    assert len(lanes.start_due(start, now=0.0, now_ms=0.0)) == 2  # two calls at once, the third waits for room
    assert started == [["a"], ["b"]] and lanes.in_flight() == 2
    gates[1].set()  # the later call returns first
    assert await finish(lanes) == []  # held: "a" has not been answered
    gates[0].set()
    assert await finish(lanes) == [("m", ["a"]), ("m", ["b"])]
    assert len(lanes.start_due(start, now=0.0, now_ms=0.0)) == 1 and started[-1] == ["c"]


async def test_the_default_bound_on_calls_in_flight_shares_the_threads_and_always_leaves_one():
    for threads, models, share in ((1, 1, 1), (2, 1, 1), (8, 1, 7), (8, 2, 4), (8, 3, 2), (8, 20, 1)):
        lanes = lanes_with({})
        lanes.threads = threads
        for m in range(models):
            lanes.lane(f"m{m}")
        assert {lane.share for lane in lanes.lanes.values()} == {share}, (threads, models)
    pinned = lanes_with({"m": ServingSpec(max_calls_in_flight=3)})
    pinned.threads = 8
    pinned.add("m", reqs("a", "b", "c", "d"), now=0.0)
    assert len(pinned.start_due(Calls().start, now=0.0, now_ms=0.0)) == 1  # no bound on cost: one call takes all


async def test_a_model_alone_on_the_threads_gets_every_one_and_a_second_model_takes_the_spare_back():
    lanes = lanes_with({"m": ServingSpec(max_batch_cost=1)})
    lanes.threads = 2
    lanes.add("m", reqs("a", "b", "c"), now=0.0)
    assert len(lanes.start_due(Calls().start, now=0.0, now_ms=0.0)) == 1  # one thread kept for another model
    lanes = lanes_with({"m": ServingSpec(max_batch_cost=1)})
    lanes.threads = 2
    lanes.add("m", reqs("a", "b", "c"), now=0.0)
    lanes.set_alone(True)  # the only model placed on the worker, no other worker on the threads
    calls = Calls()
    assert len(lanes.start_due(calls.start, now=0.0, now_ms=0.0)) == 2  # both threads, one request each

    lanes.set_alone(False)  # a second model was placed here: one thread is kept for it again
    lanes.lane("n")
    assert {lane.share for lane in lanes.lanes.values()} == {1}


async def test_the_lowest_offset_per_partition_follows_requests_queued_and_in_calls_until_answered():
    """What the commit stops at: the lowest offset not answered, per partition, kept without a walk of the queue."""
    lanes: Lanes[Req, list[str]] = Lanes(lambda m: ServingSpec(max_batch_cost=2), payload_of=lambda r: r.payload,
                                         deadline_of=lambda r: r.deadline_ms,
                                         position_of=lambda r: (r.name[0], int(r.name[1:])))
    calls = Calls()
    lanes.add("m", [Req("a0", {}), Req("b0", {}), Req("a1", {}), Req("a2", {}, deadline_ms=5.0)], now=0.0)
    lanes.add("n", [Req("b1", {})], now=0.0)
    assert lanes.lowest() == {"a": 0, "b": 0}
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)  # m: a0, b0 in a call; n: b1 in a call
    assert lanes.lowest() == {"a": 0, "b": 0}  # in a call is not answered
    assert [r.name for _, r in lanes.expired(now_ms=10.0)] == ["a2"]  # answered expired: no longer holds
    assert await finish(lanes) == [("m", ["a0", "b0"]), ("n", ["b1"])]
    assert lanes.lowest() == {"a": 1}  # b fully answered; a1 still queued
    lanes.start_due(calls.start, now=0.0, now_ms=10.0)
    await finish(lanes)
    assert lanes.lowest() == {}


async def test_a_call_that_returned_holds_no_thread_while_it_waits_to_be_answered():
    """The worker starts a model's next call the moment one returns (before the loop answers it): a returned call
    no longer counts against ``max_calls_in_flight``, and a lane with an expired request is left for the loop."""
    lanes, calls = lanes_with({"m": ServingSpec(max_batch_cost=1, max_calls_in_flight=1)}), Calls()
    lanes.add("m", reqs("a", "b"), now=0.0)
    lanes.add("m", reqs("late", deadline_ms=5.0), now=0.0)
    lanes.start_due(calls.start, now=0.0, now_ms=0.0)
    assert lanes.start_due(calls.start, now=0.0, now_ms=0.0) == []  # "a" runs: no room
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # "a" has returned, not yet answered
    assert lanes.start_due(calls.start, now=0.0, now_ms=10.0, unexpired_only=True) == []  # "late" expired: the loop's
    assert [r.name for _, r in lanes.expired(now_ms=10.0)] == ["late"]
    assert len(lanes.start_due(calls.start, now=0.0, now_ms=10.0, unexpired_only=True)) == 1
    assert calls.batches == [("m", ["a"]), ("m", ["b"])]
    assert [m for m, _, _ in lanes.returned()] == ["m"]  # answered in order: "a" first
