"""Routing: which model serves a request, decided purely from a rules snapshot.

Nothing here does I/O (except :func:`load_rules`, which reads a file), reads a
clock, or draws random numbers; ``route(view, rules) -> Decision`` is the
router's hot path. The rules format is documented in ``docs/rules.md``.
"""

from routing.allocation import BUCKETS, bucket_of, partition_for, shadow_sampled
from routing.errors import RoutingError, RulesError
from routing.explain import explain
from routing.parse import load_rules, parse_rules
from routing.route import Decision, RequestView, extract_shard_key, route
from routing.rules import Canary, Cell, ClientPolicy, Experiment, Objective, Rules, ShadowEntry
from routing.rules_doc import rules_to_doc
from routing.simulate import simulate

__all__ = [
    "BUCKETS",
    "Canary",
    "Cell",
    "ClientPolicy",
    "Decision",
    "Experiment",
    "Objective",
    "RequestView",
    "RoutingError",
    "Rules",
    "RulesError",
    "ShadowEntry",
    "bucket_of",
    "explain",
    "extract_shard_key",
    "load_rules",
    "parse_rules",
    "partition_for",
    "route",
    "rules_to_doc",
    "shadow_sampled",
    "simulate",
]
