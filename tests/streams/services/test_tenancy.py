"""Request-topic identity and per-client rate limits (pure: no broker)."""

from __future__ import annotations

import re

from routing.rules import ClientPolicy
from streams.services.tenancy import ClientRateLimiter, RequestSource, request_topic_pattern, source_of
from streams.topics import TopicLayout

LAYOUT = TopicLayout(prefix="scoreline.")


def test_request_topics_name_their_client_and_traffic():
    assert source_of(LAYOUT, "scoreline.requests") == RequestSource(None, "live")
    assert source_of(LAYOUT, "scoreline.requests.backfill") == RequestSource(None, "backfill")
    assert source_of(LAYOUT, "scoreline.requests.homepage") == RequestSource("homepage", "live")
    assert source_of(LAYOUT, "scoreline.requests.homepage.backfill") == RequestSource("homepage", "backfill")


def test_the_pattern_takes_request_topics_only():
    pattern = re.compile(request_topic_pattern(LAYOUT))
    for topic in ("scoreline.requests", "scoreline.requests.backfill", "scoreline.requests.homepage",
                  "scoreline.requests.home_page-2.backfill"):
        assert pattern.match(topic), topic
    for topic in ("scoreline.replies.demo", "scoreline.requestsX", "other.requests", "scoreline.requests.a.b",
                  "scoreline.shard.s1", "xscoreline.requests"):
        assert not pattern.match(topic), topic


def test_rate_limiter_allows_the_rate_and_burst_then_refuses():
    policy = ClientPolicy(name="noisy", objectives=("*",), reply_topics=("r",), rate_limit_rps=10, burst=5)
    limiter = ClientRateLimiter()
    assert [limiter.admit(policy, 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    # A tenth of a second refills one token at 10/s.
    assert limiter.admit(policy, 0.1) is True
    assert limiter.admit(policy, 0.1) is False
    # Over a long quiet spell the bucket fills only up to the burst.
    assert sum(limiter.admit(policy, 100.0) for _ in range(20)) == 5


def test_rate_limiter_keeps_clients_apart_and_ignores_unlimited_ones():
    noisy = ClientPolicy(name="noisy", objectives=("*",), reply_topics=("r",), rate_limit_rps=1)
    quiet = ClientPolicy(name="quiet", objectives=("*",), reply_topics=("r",), rate_limit_rps=1)
    free = ClientPolicy(name="free", objectives=("*",), reply_topics=("r",))
    limiter = ClientRateLimiter()
    assert limiter.admit(noisy, 0.0) and not limiter.admit(noisy, 0.0)
    assert limiter.admit(quiet, 0.0)
    assert all(limiter.admit(free, 0.0) for _ in range(1000))
