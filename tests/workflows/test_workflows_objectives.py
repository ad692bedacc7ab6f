"""What each objective returns: rankings, filters, defaults, invalid payloads."""

from __future__ import annotations

import numpy as np
import pytest
from workflows_testutil import assert_same

from workflows.base import Item
from workflows.registry import ModelRegistry

USER = {"user_id": "u-1", "country": "US", "device": "tv", "surface": "home"}
PAYMENT = {"amount": 42.5, "currency": "USD", "merchant_category": "grocery", "card_present": True}


def home_of(facts, user_id: str) -> str:
    spec = facts.spec("user_profile")
    row = facts.lookup("user_profile", [user_id]).values[0]
    return spec.columns[int(np.argmax(row[:8]))].split("=")[1]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_ranking_top_k_sorted_with_unknown_titles(registry: ModelRegistry, version: str) -> None:
    model = registry.get(f"title-ranking@{version}")
    titles = [f"t-{i}" for i in range(30)] + ["t-nope", "t-3"]
    [out] = model.score_batch([Item(USER, {"titles": titles, "k": 5})])
    ranking = out.value["ranking"]
    assert len(ranking) == 5
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert out.value["unknown_titles"] == ["t-nope"]
    [default_k] = model.score_batch([Item(USER, {"titles": titles})])
    assert len(default_k.value["ranking"]) == 10
    assert default_k.value["ranking"][:5] == ranking


def test_titles_unavailable_in_the_country_are_dropped(registry, facts) -> None:
    spec = facts.spec("title_availability")
    catalogue = list(facts.keys("title_availability"))
    rows = facts.lookup("title_availability", catalogue).values
    us = spec.columns.index("US")
    unavailable = [t for t, r in zip(catalogue, rows) if r[us] < 0.5][:5]
    available = [t for t, r in zip(catalogue, rows) if r[us] > 0.5][:5]
    assert unavailable
    [out] = registry.get("title-ranking@v1").score_batch([Item(USER, {"titles": unavailable + available, "k": 20})])
    assert {r["title"] for r in out.value["ranking"]} == set(available)


def test_unknown_user_gets_the_default_embedding_and_is_counted(registry, facts) -> None:
    model = registry.get("title-ranking@v2")
    before = facts.missing_counts()["user_embedding"]
    titles = [f"t-{i}" for i in range(20)]
    [a, b] = model.score_batch([
        Item({**USER, "user_id": "u-never-seen"}, {"titles": titles}),
        Item({**USER, "user_id": "u-never-seen-either"}, {"titles": titles}),
    ])
    assert a.ok and a.value == b.value  # both on the same default row
    assert facts.missing_counts()["user_embedding"] == before + 2


def test_unknown_fraud_user_is_scored_on_the_default_history(registry, facts) -> None:
    model = registry.get("fraud-score@v1")
    [new, known] = model.score_batch([Item({"user_id": "u-brand-new", "country": "US"}, PAYMENT),
                                      Item({"user_id": "u-1", "country": home_of(facts, "u-1")}, PAYMENT)])
    assert new.ok and known.ok
    assert new.value["probability"] != known.value["probability"]
    assert facts.missing_counts()["user_txn_history"] == 1
    assert facts.missing_counts()["user_profile"] == 1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_fraud_result_shape_and_risk_ordering(registry, facts, version: str) -> None:
    model = registry.get(f"fraud-score@{version}")
    home = home_of(facts, "u-1")
    abroad = "JP" if home != "JP" else "US"
    safe = Item({"user_id": "u-1", "country": home}, {**PAYMENT, "currency": "USD"})
    risky = Item({"user_id": "u-1", "country": abroad},
                 {"amount": 4000, "currency": "USD", "merchant_category": "gift_cards", "card_present": False})
    [s, r] = model.score_batch([safe, risky])
    assert set(s.value) == {"probability", "band"}
    assert 0 < s.value["probability"] < r.value["probability"] < 1
    assert s.value["band"] == "low" and r.value["band"] in ("review", "block")


RANKING_INVALID = [
    ({}, "payload.titles"),
    ({"titles": "t-1"}, "payload.titles"),
    ({"titles": ["t-1", 7]}, "payload.titles"),
    ({"titles": ["t-1", ["t-2"]]}, "payload.titles"),  # unhashable: caught, not raised
    ({"titles": ["t-1", True, "t-1"]}, "payload.titles"),
    ({"titles": ["t-1"] * 1001}, "payload.titles"),  # over max_titles
    ({"titles": ["t-1"] * 1001 + [7], "k": 0}, "payload.titles"),  # the first broken rule is the one named
    ({"titles": None}, "payload.titles"),
    ({"titles": ["t-1"], "k": 0}, "payload.k"),
    ({"titles": ["t-1"], "k": True}, "payload.k"),
    ({"titles": ["t-1"], "k": "3"}, "payload.k"),
]
FRAUD_INVALID = [
    ({**PAYMENT, "amount": "12"}, "payload.amount"),
    ({**PAYMENT, "amount": True}, "payload.amount"),
    ({**PAYMENT, "amount": -1}, "payload.amount"),
    ({**PAYMENT, "amount": float("inf")}, "payload.amount"),
    ({**PAYMENT, "amount": 10**400}, "payload.amount"),
    ({k: v for k, v in PAYMENT.items() if k != "amount"}, "payload.amount"),
    ({**PAYMENT, "currency": "XXX"}, "payload.currency"),
    ({**PAYMENT, "merchant_category": 3}, "payload.merchant_category"),
    ({**PAYMENT, "card_present": "yes"}, "payload.card_present"),
]


@pytest.mark.parametrize(("model_id", "cases", "good"), [
    ("title-ranking@v1", RANKING_INVALID, {"titles": ["t-1", "t-2"]}),
    ("fraud-score@v2", FRAUD_INVALID, PAYMENT),
])
def test_invalid_items_name_the_field_and_the_rest_is_scored(registry, model_id, cases, good) -> None:
    model = registry.get(model_id)
    items = []
    for payload, _ in cases:
        items += [Item(USER, good), Item(USER, payload)]
    outcomes = model.score_batch(items)
    [clean] = model.score_batch([Item(USER, good)])
    for (_, field), ok, bad in zip(cases, outcomes[::2], outcomes[1::2]):
        assert_same(ok.value, clean.value)
        assert bad.value is None and bad.error.code == "invalid_payload"
        assert bad.error.field == field and field in bad.error.message


@pytest.mark.parametrize("model_id", ["title-ranking@v1", "fraud-score@v1"])
def test_missing_user_id_is_invalid(registry, model_id) -> None:
    payload = {"titles": ["t-1"]} if model_id.startswith("title") else PAYMENT
    [out] = registry.get(model_id).score_batch([Item({"country": "US"}, payload)])
    assert out.error.code == "invalid_payload" and out.error.field == "context.user_id"


def test_unknown_country_and_category_still_score(registry) -> None:
    [rank] = registry.get("title-ranking@v2").score_batch([Item({"user_id": "u-1", "country": "ZZ"},
                                                                 {"titles": [f"t-{i}" for i in range(40)]})])
    [fraud] = registry.get("fraud-score@v2").score_batch([Item({"user_id": "u-1"},
                                                               {**PAYMENT, "merchant_category": "zoo"})])
    assert rank.ok and rank.value["ranking"] and fraud.ok
