"""One fully populated and one minimal instance of every message, shared by the tests."""

from __future__ import annotations

from schemas import Comparison, DeadLetter, ErrorInfo, Request, Result, ShadowResult

FULL_REQUEST = Request(
    request_id="8f0c",
    objective="title-ranking",
    client="homepage",
    reply_to="scoreline.replies.homepage",
    context={"user_id": "u-123", "country": "US", "device": "tv", "surface": "home"},
    payload={"titles": ["t-1", "t-2", "t-3"]},
    deadline_ms=1764000000000,
    traffic="backfill",
    model="title-ranker@v3",
)
MINIMAL_REQUEST = Request("r-1", "title-ranking", "demo", "scoreline.replies.demo", {})

OK_RESULT = Result(
    request_id="8f0c",
    objective="title-ranking",
    status="ok",
    model="title-ranker@v3",
    cell="2",
    rules_version=7,
    shard="s1",
    result={"ranking": [{"title": "t-2", "score": 0.91}, {"title": "t-1", "score": 0.4}]},
    timings_ms={"routed": 0.4, "scored": 3.1, "total": 5.2},
    traffic="live",
)
ERROR_RESULT = Result(
    request_id="8f0d",
    objective=None,
    status="error",
    error=ErrorInfo("missing_field", "objective is required", field="objective"),
)
EXPIRED_RESULT = Result(
    request_id="8f0e",
    objective="title-ranking",
    status="expired",
    error=ErrorInfo("deadline_expired", "deadline passed 12 ms before scoring"),
    traffic="backfill",
)

DEAD_LETTER = DeadLetter(
    code="malformed_json",
    message="request is not valid UTF-8 JSON",
    field=None,
    request_id=None,
    client=None,
    stage="router",
    source_topic="scoreline.requests",
    source_partition=3,
    source_offset=1234,
    ts_ms=1764000000000,
    original_b64="/w==",
    original_headers={"scoreline-client": "homepage"},
)
MINIMAL_DEAD_LETTER = DeadLetter(
    "missing_field", "context is required", "context", "r-1", "demo", "worker",
    "scoreline.shard.s1", 0, 0, 1764000000000, "",
)

SHADOW_RESULT = ShadowResult(
    role="shadow",
    request_id="8f0c",
    objective="title-ranking",
    model="title-ranker@v4",
    primary_model="title-ranker@v3",
    shadow_models=["title-ranker@v4", "title-ranker@v5"],
    cell=None,
    rules_version=7,
    shard="s1",
    status="ok",
    result={"ranking": [{"title": "t-1", "score": 0.7}]},
    error=None,
    latency_ms=2.5,
    traffic="live",
    context={"country": "US", "device": "tv", "surface": "home", "client": "homepage"},
    ts_ms=1764000000123,
)
FAILED_SHADOW_RESULT = ShadowResult(
    role="primary",
    request_id="8f0f",
    objective="title-ranking",
    model="title-ranker@v3",
    primary_model="title-ranker@v3",
    shadow_models=[],
    cell="1",
    rules_version=None,
    shard=None,
    status="error",
    result=None,
    error=ErrorInfo("workflow_error", "fact store unavailable"),
    latency_ms=12,
    traffic="test",
    context={},
    ts_ms=1764000000456,
)

RANKING_COMPARISON = Comparison(
    request_id="8f0c",
    objective="title-ranking",
    primary_model="title-ranker@v3",
    shadow_model="title-ranker@v4",
    matched=True,
    reason=None,
    rules_version=7,
    cell="2",
    primary_status="ok",
    shadow_status="ok",
    primary_latency_ms=3.1,
    shadow_latency_ms=2.5,
    agreement={"kind": "ranking", "top_k": 2, "top_k_overlap": 1.0, "top1_agrees": False, "common": 2,
               "kendall_tau": -1.0, "score_delta_mean": 0.05, "score_delta_mean_abs": 0.25,
               "score_delta_max_abs": 0.3},
    traffic="live",
    context={"country": "US", "device": "tv", "surface": "home", "client": "homepage"},
    ts_ms=1764000000200,
)
PROBABILITY_COMPARISON = Comparison(
    "p-1", "fraud-score", "fraud-score@v1", "fraud-score@v2", True, None, 3, None, "ok", "ok", 1, 1.5,
    {"kind": "probability", "primary_probability": 0.1, "shadow_probability": 0.6, "delta": 0.5,
     "abs_diff": 0.5, "primary_band": "low", "shadow_band": "review", "band_agrees": False},
    "backfill", {"country": "DE"}, 1764000000300,
)
TIMED_OUT_COMPARISON = Comparison(
    "8f10", "title-ranking", "title-ranker@v3", "title-ranker@v4", False, "timed_out", None, None,
    "ok", None, 4.0, None, {}, "test", {}, 1764000000400,
)

REQUESTS = [FULL_REQUEST, MINIMAL_REQUEST]
RESULTS = [OK_RESULT, ERROR_RESULT, EXPIRED_RESULT]
DEAD_LETTERS = [DEAD_LETTER, MINIMAL_DEAD_LETTER]
SHADOW_RESULTS = [SHADOW_RESULT, FAILED_SHADOW_RESULT]
COMPARISONS = [RANKING_COMPARISON, PROBABILITY_COMPARISON, TIMED_OUT_COMPARISON]
