"""The topics and routing rules of one bench pipeline, derived from its unique prefix."""

from __future__ import annotations

import orjson

from routing import Rules, parse_rules
from streams.topics import TopicLayout, TopicSpec
from workflows.registry import EXAMPLES_DIR

__all__ = ["CLIENT", "bench_layout", "bench_rules", "bench_topics", "EXAMPLE_RULES"]

CLIENT = "demo"
"The client the load generator sends as; the example rules let it call every objective."

PARTITIONS = 4
"Partitions of every bench topic (the shipped default of ``scoreline run``)."


EXAMPLE_RULES = EXAMPLES_DIR / "rules.json"
"The shipped example rules every bench pipeline routes by."


def bench_layout(prefix: str) -> TopicLayout:
    """Topic names under ``prefix``, with the shipped partition counts."""
    return TopicLayout(prefix=prefix, request_partitions=PARTITIONS, shard_partitions=PARTITIONS,
                       reply_partitions=PARTITIONS)


def bench_rules(prefix: str) -> Rules:
    """The shipped example rules with the reply topics under ``prefix`` and shadowing off.

    Shadow copies are left out of every pipeline: the comparison is route-then-score, and
    the baselines would otherwise have to copy and score each request a second time.
    """
    raw = orjson.loads(EXAMPLE_RULES.read_text().replace('"scoreline.replies.', f'"{prefix}replies.'))
    for objective in raw["objectives"].values():
        objective.pop("shadow", None)
    return parse_rules(raw)


def bench_topics(prefix: str, rules: Rules) -> list[TopicSpec]:
    """Every topic any of the three pipelines uses under ``prefix``."""
    layout = bench_layout(prefix)
    reply_topics = sorted({t for c in rules.clients.values() for t in c.reply_topics if not t.endswith("*")})
    specs = layout.specs(rules.shards, reply_topics)
    specs.append(TopicSpec(f"{prefix}relay", PARTITIONS))  # the ceiling's middle hop
    return specs
