"""The topics and routing rules of one bench pipeline, derived from its unique prefix."""

from __future__ import annotations

import os

import orjson

from routing import Rules, parse_rules
from streams.topics import TopicLayout, TopicSpec
from workflows.registry import EXAMPLES_DIR

__all__ = ["BENCH_MODEL_ENV", "CLIENT", "bench_layout", "bench_model", "bench_rules", "bench_rules_doc", "bench_topics",
           "EXAMPLE_RULES"]

BENCH_MODEL_ENV = "SCORELINE_BENCH_MODEL"
"""Set by the bench for a model-bound run: the reference objective every pipeline serves (its processes
find the reference packages through ``SCORELINE_MODELS_DIR``, set beside it)."""

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


def bench_model() -> str | None:
    """The reference objective of a model-bound run (``SCORELINE_BENCH_MODEL``), or None."""
    return os.environ.get(BENCH_MODEL_ENV) or None


def bench_rules(prefix: str, model: str | None = None) -> Rules:
    """The shipped example rules with the reply topics under ``prefix`` and shadowing off; with ``model``
    (a reference objective), the reference rules for that objective alone.

    Shadow copies are left out of every pipeline: the comparison is route-then-score, and
    the baselines would otherwise have to copy and score each request a second time.
    """
    if model is not None:
        from workflows.training.reference import reference_rules

        doc = reference_rules(prefix)
        doc["objectives"] = {model: doc["objectives"][model]}
        doc["models"] = {f"{model}@v1": doc["models"][f"{model}@v1"]}
        return parse_rules(doc)
    return parse_rules(bench_rules_doc(prefix, shadow=False))


def bench_rules_doc(prefix: str, *, shadow: bool) -> dict:
    """The shipped example rules as a document, reply topics under ``prefix``; ``shadow`` keeps their shadow
    candidates (the ``scoreline_run`` pipeline runs them as shipped: every role, shadowing on)."""
    raw: dict = orjson.loads(EXAMPLE_RULES.read_text().replace('"scoreline.replies.', f'"{prefix}replies.'))
    if not shadow:
        for objective in raw["objectives"].values():
            objective.pop("shadow", None)
    return raw


def bench_topics(prefix: str, rules: Rules) -> list[TopicSpec]:
    """Every topic any of the three pipelines uses under ``prefix``."""
    layout = bench_layout(prefix)
    reply_topics = sorted({t for c in rules.clients.values() for t in c.reply_topics if not t.endswith("*")})
    specs = layout.specs(rules.shards, reply_topics)
    specs.append(TopicSpec(f"{prefix}relay", PARTITIONS))  # the ceiling's middle hop
    return specs
