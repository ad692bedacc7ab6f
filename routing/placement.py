"""Which shard each model is deployed on, balanced by memory and traffic: ``scoreline placement plan``.

Pure: the plan is computed from the rules, each model's memory (measured by a running worker,
else declared by its package) and its share of traffic (recent traffic where the caller has it,
else the rules' allocation: :func:`routing.simulate.expected_shares`, objectives weighted alike).
Only models that serve as a primary are placed; a model that only ever shadows is scored by the
shadow workers, wherever the rules list it, and keeps its entry.

The greedy plan takes the models largest first (by the larger of their memory and traffic
fractions) and puts each on the shard where the larger of that shard's memory and traffic
fractions grows least, but keeps a model where it is unless moving it gains more than
``tolerance`` of a fair share: every move costs a cold load on the new shard, so a plan moves
little. In-flight work is not affected by a move: the routing decision travels in the work
record, and the old shard's worker scores what was routed to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routing.rules import Rules
from routing.simulate import expected_shares

__all__ = ["Capacity", "Placement", "RoleCapacity", "ShardLoad", "plan_capacity", "plan_placement", "rules_traffic"]


@dataclass(frozen=True)
class ShardLoad:
    """What one shard holds: bytes of model memory, and its share of the placed models' traffic."""

    memory: int
    traffic: float
    models: int


@dataclass(frozen=True)
class Placement:
    """A plan: where each placed model goes, what moves, and each shard's load before and after."""

    shards: tuple[str, ...]
    placement: Mapping[str, str]
    "Model -> shard, for every model of the rules (shadow-only ones where they were)."
    moves: Mapping[str, tuple[str, str]]
    "Model -> (from, to), for the models the plan moves."
    before: Mapping[str, ShardLoad]
    after: Mapping[str, ShardLoad]

    def imbalance(self, which: str = "after") -> float:
        """The busiest shard's larger fraction (of memory or traffic) over a fair share: 1.0 is balanced."""
        loads = self.after if which == "after" else self.before
        memory = sum(s.memory for s in loads.values()) or 1
        traffic = sum(s.traffic for s in loads.values()) or 1.0
        worst = max((max(s.memory / memory, s.traffic / traffic) for s in loads.values()), default=0.0)
        return worst * len(self.shards)


def rules_traffic(rules: Rules) -> dict[str, float]:
    """Each model's share of all primary traffic by the rules' allocation (every objective weighted alike)."""
    out: dict[str, float] = {}
    names = list(rules.objectives)
    for name in names:
        for model, share in expected_shares(rules, name).items():
            out[model] = out.get(model, 0.0) + share / len(names)
    return {m: s for m, s in out.items() if s > 0}


def plan_placement(rules: Rules, memory: Mapping[str, int], *, traffic: Mapping[str, float] | None = None,
                   shards: Sequence[str] | None = None, tolerance: float = 0.1) -> Placement:
    """Assign the rules' primary models to ``shards`` (default: the rules' shards), balancing memory and traffic.

    ``memory``: bytes per model (a model missing counts as the mean of the others). ``traffic``:
    share per model (default :func:`rules_traffic`); models it lacks get none.
    """
    names = tuple(shards) if shards else rules.shards
    if not names:
        raise ValueError("no shards to place models on")
    allocated = rules_traffic(rules)
    shares = dict(traffic) if traffic is not None else allocated
    primary = [m for m in rules.models if m in allocated]
    known = [memory[m] for m in primary if m in memory]
    fallback = int(sum(known) / len(known)) if known else 1
    size = {m: int(memory.get(m, fallback)) for m in primary}
    total_memory = sum(size.values()) or 1
    total_traffic = sum(shares.get(m, 0.0) for m in primary) or 1.0
    fair = 1.0 / len(names)

    def weight(model: str) -> tuple[float, float]:
        return size[model] / total_memory, shares.get(model, 0.0) / total_traffic

    held = {s: [0.0, 0.0] for s in names}
    placement = dict(rules.models)
    order = sorted(primary, key=lambda m: (-max(weight(m)), m))
    for model in order:
        mem, load = weight(model)

        def cost(shard: str, mem: float = mem, load: float = load) -> float:
            return max(held[shard][0] + mem, held[shard][1] + load)

        best = min(names, key=lambda s: (cost(s), s))
        current = rules.models.get(model)
        choice = current if current in held and cost(current) <= cost(best) + tolerance * fair else best
        held[choice][0] += mem
        held[choice][1] += load
        placement[model] = choice
    moves = {m: (rules.models[m], placement[m]) for m in primary if placement[m] != rules.models.get(m)}
    return Placement(names, placement, moves, _loads(rules.models, primary, size, shares, names),
                     _loads(placement, primary, size, shares, names))


def _loads(placement: Mapping[str, str], primary: Sequence[str], size: Mapping[str, int],
           shares: Mapping[str, float], shards: Sequence[str]) -> dict[str, ShardLoad]:
    out = {s: ShardLoad(0, 0.0, 0) for s in shards}
    for model in primary:
        shard = placement.get(model)
        if shard is None:
            continue
        load = out.get(shard, ShardLoad(0, 0.0, 0))
        out[shard] = ShardLoad(load.memory + size[model], load.traffic + shares.get(model, 0.0), load.models + 1)
    return out


@dataclass(frozen=True)
class RoleCapacity:
    """What one role (the router, or one shard's workers) needs for a forecast."""

    rps: float
    "Requests per second the forecast sends this role."
    replicas: int
    "Replicas that serve ``rps`` with each at ``utilisation`` of what it sustains."
    partitions: int
    "Partitions of its topic: room for ``burst`` times ``replicas`` (the autoscaler's ceiling)."
    lag_threshold: int
    "KEDA's ``lagThreshold``: what one replica works off in the drain time."


@dataclass(frozen=True)
class Capacity:
    """Replicas and partitions per role for a traffic forecast (``scoreline placement plan --forecast``)."""

    forecast_rps: float
    router: RoleCapacity
    shards: Mapping[str, RoleCapacity]


def plan_capacity(shares: Mapping[str, float], forecast_rps: float, *, router_rps: float, worker_rps: float,
                  utilisation: float = 0.7, burst: float = 2.0, drain_s: float = 2.0) -> Capacity:
    """Replicas and partitions that serve ``forecast_rps``, split over shards by ``shares`` (shard -> traffic share).

    A role needs ``ceil(rps / (per_replica_rps * utilisation))`` replicas (at least one), and its
    topic ``ceil(replicas * burst)`` partitions, since a consumer group uses at most one member a
    partition: ``burst`` is how far past the forecast the autoscaler may go. ``router_rps`` and
    ``worker_rps`` are what one replica sustains, measured (``scoreline bench``).
    """
    if forecast_rps < 0 or router_rps <= 0 or worker_rps <= 0:
        raise ValueError("the forecast must be >= 0 and each per-replica throughput > 0")
    if not 0 < utilisation <= 1 or burst < 1:
        raise ValueError("utilisation must be in (0, 1] and burst at least 1")
    total = sum(shares.values()) or 1.0

    def role(rps: float, per_replica: float) -> RoleCapacity:
        replicas = max(1, math.ceil(rps / (per_replica * utilisation)))
        return RoleCapacity(round(rps, 1), replicas, math.ceil(replicas * burst), max(1, int(per_replica * drain_s)))

    return Capacity(forecast_rps, role(forecast_rps, router_rps),
                    {s: role(forecast_rps * share / total, worker_rps) for s, share in shares.items()})
