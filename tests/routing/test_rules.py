"""Parsing, round trips and validation: every check names the path of its problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from routing import RulesError, load_rules, parse_rules, rules_to_doc
from routing.errors import INVALID_RULES
from schemas.errors import ScorelineError

Doc = dict[str, Any]


def problems_of(doc: Doc, **kwargs: Any) -> tuple[str, ...]:
    with pytest.raises(RulesError) as info:
        parse_rules(doc, **kwargs)
    assert info.value.code == INVALID_RULES
    assert isinstance(info.value, ScorelineError)
    return info.value.problems


def tr(doc: Doc) -> Doc:
    return doc["objectives"]["title-ranking"]


def test_example_parses(example_rules) -> None:
    assert example_rules.version == 1
    assert example_rules.shards == ("s1", "s2")
    assert example_rules.models_on("s1") == ("title-ranking@v1", "fraud-score@v2", "churn-risk@v1")
    assert example_rules.shard_of("title-ranking@v2") == "s2"
    assert example_rules.shard_key_path("title-ranking") == "context.user_id"
    assert example_rules.needs_context("title-ranking") is True
    assert example_rules.needs_context("fraud-score") is False
    assert example_rules.context_fields("title-ranking") == frozenset({"country"})
    assert example_rules.context_fields("fraud-score") == frozenset()
    assert example_rules.context_fields("no-such-objective") == frozenset()
    assert example_rules.reply_allowed("homepage", "scoreline.replies.homepage-7")
    assert not example_rules.reply_allowed("homepage", "scoreline.replies.demo")


def test_context_fields_union_the_experiments_and_leave_out_client(example_doc: Doc) -> None:
    experiments = tr(example_doc)["experiments"]
    experiments[0]["match"] = {"country": ["US"], "client": ["homepage"]}
    experiments.append({**experiments[0], "id": "by-device", "salt": "by-device",
                        "offset_percent": 20, "match": {"device": ["tv"], "surface": ["home"]}})
    rules = parse_rules(example_doc)
    assert rules.context_fields("title-ranking") == frozenset({"country", "device", "surface"})
    assert rules.needs_context("title-ranking") is True
    experiments[:] = [{**experiments[0], "match": {"client": ["homepage"]}}]
    rules = parse_rules(example_doc)
    assert rules.context_fields("title-ranking") == frozenset()
    assert rules.needs_context("title-ranking") is False


def test_round_trip(example_rules) -> None:
    doc = rules_to_doc(example_rules)
    assert parse_rules(doc) == example_rules
    assert rules_to_doc(parse_rules(doc)) == doc
    assert json.loads(json.dumps(doc)) == doc


def test_round_trip_of_every_optional_field(example_doc: Doc) -> None:
    exp = tr(example_doc)["experiments"][0]
    exp.update(offset_percent=0.5, allocation_percent=12.25, salt="other")
    exp["cells"]["2"] = {"model": "title-ranking@v2", "weight": 3}
    tr(example_doc)["salt"] = "layer-1"
    tr(example_doc)["shadow"][0]["salt"] = "sh"
    tr(example_doc)["experiments"].append(
        {"id": "tr-b", "allocation_percent": 10, "offset_percent": 5, "match": {"client": ["homepage"]},
         "cells": {"a": "title-ranking@v1"}, "compatible_with": ["tr-2026-11"]}
    )
    rules = parse_rules(example_doc, version=9)
    assert rules.version == 9
    assert parse_rules(rules_to_doc(rules)) == rules


def test_version_is_optional_and_argument_wins(example_doc: Doc) -> None:
    del example_doc["version"]
    assert parse_rules(example_doc).version == 0
    assert parse_rules(example_doc, version=4).version == 4
    assert "version" not in rules_to_doc(parse_rules(example_doc))


def test_shadow_all_example_parses() -> None:
    rules = load_rules(Path(__file__).resolve().parents[2] / "scoreline" / "examples" / "rules-shadow-all.json")
    assert rules.objectives["title-ranking"].shadow[0].percent == 100


def test_snapshot_is_immutable(example_rules) -> None:
    with pytest.raises(TypeError):
        example_rules.models["x@v1"] = "s1"  # type: ignore[index]
    with pytest.raises(AttributeError):
        example_rules.version = 2  # type: ignore[misc]


def test_load_rules_reports_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text("{not json")
    with pytest.raises(RulesError, match="not valid JSON"):
        load_rules(path)


def test_all_problems_are_reported_at_once(example_doc: Doc) -> None:
    tr(example_doc)["default"] = "nope@v1"
    example_doc["models"]["fraud-score@v2"]["shard"] = "s9"
    assert len(problems_of(example_doc)) == 2


# One test per check; each mutates the shipped example and expects one problem naming its path.
CHECKS: dict[str, tuple[Callable[[Doc], None], str]] = {
    "unknown model in a cell": (
        lambda d: tr(d)["experiments"][0]["cells"].update({"2": "x@v1"}),
        "objectives.title-ranking.experiments[0].cells.2: unknown model 'x@v1'",
    ),
    "unknown default model": (
        lambda d: tr(d).update(default="x@v1"),
        "objectives.title-ranking.default: unknown model 'x@v1'",
    ),
    "unknown canary model": (
        lambda d: tr(d)["canary"].update(model="x@v1"),
        "objectives.title-ranking.canary.model: unknown model 'x@v1'",
    ),
    "unknown shadow model": (
        lambda d: tr(d)["shadow"][0].update(model="x@v1"),
        "objectives.title-ranking.shadow[0].model: unknown model 'x@v1'",
    ),
    "model not placed on a shard": (
        lambda d: d["models"].update({"x@v1": {}}),
        "models.x@v1.shard: missing required field",
    ),
    "model on an unknown shard": (
        lambda d: d["models"].update({"x@v1": {"shard": "s9"}}),
        "models.x@v1.shard: unknown shard 's9'",
    ),
    "model id without version": (
        lambda d: d["models"].update({"ranker": {"shard": "s1"}}),
        "models.ranker: 'ranker' is not a valid model id (name@version)",
    ),
    "percent above 100": (
        lambda d: tr(d)["canary"].update(percent=101),
        "objectives.title-ranking.canary.percent: 101 is outside 0..100",
    ),
    "percent below 0": (
        lambda d: tr(d)["shadow"][0].update(percent=-1),
        "objectives.title-ranking.shadow[0].percent: -1 is outside 0..100",
    ),
    "percent finer than a bucket": (
        lambda d: tr(d)["experiments"][0].update(allocation_percent=12.345),
        "objectives.title-ranking.experiments[0].allocation_percent: 12.345 is finer than the 0.01 % bucket resolution",
    ),
    "percent not a number": (
        lambda d: tr(d)["canary"].update(percent="10"),
        "objectives.title-ranking.canary.percent: expected a number 0..100, got a string",
    ),
    "canary plus experiment past 100": (
        lambda d: tr(d)["canary"].update(percent=81),
        "objectives.title-ranking.canary.percent: canary 81% (top buckets [19%, 100%)) + experiment "
        "'tr-2026-11' (buckets [0%, 20%)) claim the same users: together they pass 100%",
    ),
    "experiment range past 100": (
        lambda d: (tr(d).pop("canary"), tr(d)["experiments"][0].update(offset_percent=85)),
        "objectives.title-ranking.experiments[0].allocation_percent: "
        "offset_percent 85 + allocation_percent 20 exceeds 100",
    ),
    "overlapping experiments": (
        lambda d: tr(d)["experiments"].append(
            {"id": "tr-b", "allocation_percent": 30, "offset_percent": 10, "cells": {"1": "title-ranking@v2"}}
        ),
        "objectives.title-ranking.experiments[1]: buckets [10%, 20%) overlap experiment 'tr-2026-11'; "
        "move it with offset_percent, make the match sets disjoint, or declare compatible_with",
    ),
    "compatible_with an unknown experiment": (
        lambda d: tr(d)["experiments"][0].update(compatible_with=["nope"]),
        "objectives.title-ranking.experiments[0].compatible_with: no other experiment 'nope' on this objective",
    ),
    "duplicate experiment ids": (
        lambda d: tr(d)["experiments"].append(
            {"id": "tr-2026-11", "allocation_percent": 10, "offset_percent": 20, "cells": {"1": "title-ranking@v2"}}
        ),
        "objectives.title-ranking.experiments[1].id: duplicate experiment id 'tr-2026-11' "
        "(also objectives.title-ranking.experiments[0])",
    ),
    "duplicate shadow models": (
        lambda d: tr(d)["shadow"].append({"model": "title-ranking@v2", "percent": 1}),
        "objectives.title-ranking.shadow[1].model: model 'title-ranking@v2' is already shadow[0]",
    ),
    "unknown top-level field": (lambda d: d.update(extra=1), "extra: unknown field"),
    "unknown objective field": (
        lambda d: tr(d).update(defualt="title-ranking@v1"),
        "objectives.title-ranking.defualt: unknown field",
    ),
    "unknown experiment field": (
        lambda d: tr(d)["experiments"][0].update(weight=1),
        "objectives.title-ranking.experiments[0].weight: unknown field",
    ),
    "unknown canary field": (
        lambda d: tr(d)["canary"].update(salt="tr-canary"),
        "objectives.title-ranking.canary.salt: unknown field",
    ),
    "unknown shard field": (lambda d: d["shards"]["s1"].update(size=3), "shards.s1.size: unknown field"),
    "unknown client field": (
        lambda d: d["clients"]["demo"].update(rate=5),
        "clients.demo.rate: unknown field",
    ),
    "unknown cell field": (
        lambda d: tr(d)["experiments"][0]["cells"].update({"2": {"model": "title-ranking@v2", "share": 1}}),
        "objectives.title-ranking.experiments[0].cells.2.share: unknown field",
    ),
    "missing default": (
        lambda d: tr(d).pop("default"),
        "objectives.title-ranking.default: missing required field",
    ),
    "shard key outside context": (
        lambda d: tr(d).update(shard_key="user_id"),
        "objectives.title-ranking.shard_key: 'user_id' is not a context path (expected e.g. 'context.user_id')",
    ),
    "client naming an unknown objective": (
        lambda d: d["clients"]["homepage"].update(objectives=["title-rankng"]),
        "clients.homepage.objectives[0]: unknown objective 'title-rankng'",
    ),
    "empty reply topics": (
        lambda d: d["clients"]["demo"].update(reply_topics=[]),
        "clients.demo.reply_topics: must not be empty",
    ),
    "empty objectives": (
        lambda d: d["clients"]["demo"].update(objectives=[]),
        "clients.demo.objectives: must not be empty",
    ),
    "bare wildcard reply topic": (
        lambda d: d["clients"]["demo"].update(reply_topics=["*"]),
        "clients.demo.reply_topics[0]: a bare '*' would allow any topic; give a prefix",
    ),
    "wildcard inside a reply topic": (
        lambda d: d["clients"]["demo"].update(reply_topics=["a.*.b"]),
        "clients.demo.reply_topics[0]: 'a.*.b': '*' may only end a prefix",
    ),
    "override client unknown": (
        lambda d: tr(d).update(override_clients=["ghost"]),
        "objectives.title-ranking.override_clients[0]: unknown client 'ghost'",
    ),
    "version zero": (lambda d: d.update(version=0), "version: expected a positive integer, got 0"),
    "version not an int": (lambda d: d.update(version="7"), "version: expected a positive integer, got '7'"),
    "cell weight not positive": (
        lambda d: tr(d)["experiments"][0]["cells"].update({"2": {"model": "title-ranking@v2", "weight": 0}}),
        "objectives.title-ranking.experiments[0].cells.2.weight: expected a positive integer, got 0",
    ),
    "no cells": (
        lambda d: tr(d)["experiments"][0].update(cells={}),
        "objectives.title-ranking.experiments[0].cells: expected a non-empty object of cells, got an object",
    ),
    "match values not a list": (
        lambda d: tr(d)["experiments"][0].update(match={"country": "US"}),
        "objectives.title-ranking.experiments[0].match.country: expected a list of strings, got a string",
    ),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_each_check_names_its_path(name: str, example_doc: Doc) -> None:
    mutate, expected = CHECKS[name]
    mutate(example_doc)
    assert problems_of(example_doc) == (expected,)


def test_version_argument_is_checked(example_doc: Doc) -> None:
    assert problems_of(example_doc, version=-3) == ("version (argument): expected a positive integer, got -3",)


def test_document_must_be_an_object() -> None:
    assert problems_of([]) == ("(document): expected an object, got a list",)  # type: ignore[arg-type]


def test_disjoint_matches_may_share_buckets(example_doc: Doc) -> None:
    tr(example_doc)["experiments"].append(
        {"id": "tr-eu", "allocation_percent": 20, "match": {"country": ["DE", "FR"]},
         "cells": {"1": "title-ranking@v2"}}
    )
    parse_rules(example_doc)


def test_compatible_experiments_may_share_buckets(example_doc: Doc) -> None:
    tr(example_doc)["experiments"].append(
        {"id": "tr-tv", "allocation_percent": 20, "match": {"device": ["tv"]},
         "cells": {"1": "title-ranking@v2"}, "compatible_with": ["tr-2026-11"]}
    )
    parse_rules(example_doc)


def test_experiment_beside_canary_up_to_exactly_100(example_doc: Doc) -> None:
    tr(example_doc)["canary"]["percent"] = 80
    parse_rules(example_doc)


def test_docs_example_is_the_shipped_example(example_doc: Doc) -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block is not None
    assert json.loads(block.group(1)) == example_doc


def test_client_rate_limits_round_trip(example_doc: Doc) -> None:
    example_doc["clients"]["homepage"].update(rate_limit_rps=50, burst=10)
    rules = parse_rules(example_doc)
    assert (rules.clients["homepage"].rate_limit_rps, rules.clients["homepage"].burst) == (50.0, 10.0)
    assert rules.clients["demo"].rate_limit_rps is None
    assert parse_rules(rules_to_doc(rules)) == rules


@pytest.mark.parametrize(("change", "problem"), [
    ({"rate_limit_rps": 0}, "clients.homepage.rate_limit_rps: expected a positive number, got 0"),
    ({"rate_limit_rps": "fast"}, "clients.homepage.rate_limit_rps: expected a positive number, got 'fast'"),
    ({"burst": 5}, "clients.homepage.burst: burst needs rate_limit_rps"),
])
def test_client_rate_limit_checks(example_doc: Doc, change: Doc, problem: str) -> None:
    example_doc["clients"]["homepage"].update(change)
    assert problem in problems_of(example_doc)


def test_client_names_fit_a_request_topic(example_doc: Doc) -> None:
    example_doc["clients"]["back.fill"] = example_doc["clients"].pop("homepage")
    example_doc["clients"]["backfill"] = dict(example_doc["clients"]["demo"])
    found = problems_of(example_doc)
    assert any(p.startswith("clients.back.fill") for p in found)
    assert "clients.backfill: 'backfill' is reserved (it names the backfill request topic)" in found
