"""Who a request comes from, and how much of the router one client may use.

A client's identity must not rest on a field it writes itself. Each client may have its own
request topics, ``<prefix>requests.<client>`` (and ``.backfill``); Kafka ACLs let only that
client write there, so *the topic is the identity*: a request on it that names another client
is rejected with ``identity_mismatch``. On the shared topics the body's ``client`` field is
trusted only when the deployment says so (``trust_client_field``; on by default for
development, off in a deployment that gives every client its own topic).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from routing.rules import ClientPolicy
from schemas.messages import Traffic
from streams.topics import TopicLayout

__all__ = ["RequestSource", "request_topic_pattern", "source_of", "ClientRateLimiter"]


class RequestSource(NamedTuple):
    """What the topic a request arrived on says about it."""

    client: str | None
    """The client the topic belongs to; None for the shared request topics."""
    traffic: str
    """``backfill`` on a backfill topic, else ``live``."""


def request_topic_pattern(layout: TopicLayout) -> str:
    """The regex of every request topic: the shared pair and each client's own pair."""
    return rf"^{re.escape(layout.requests)}(\.[A-Za-z0-9][A-Za-z0-9_-]*)?(\.backfill)?$"


def source_of(layout: TopicLayout, topic: str) -> RequestSource:
    """Read the client and traffic class from a request topic's name."""
    if topic == layout.requests:
        return RequestSource(None, Traffic.LIVE)
    if topic == layout.requests_backfill:
        return RequestSource(None, Traffic.BACKFILL)
    rest = topic[len(layout.requests) + 1:]
    if rest.endswith(".backfill"):
        return RequestSource(rest[: -len(".backfill")], Traffic.BACKFILL)
    return RequestSource(rest, Traffic.LIVE)


class ClientRateLimiter:
    """A token bucket per client: ``rate_limit_rps`` tokens a second, up to ``burst`` saved.

    The limit is per router process (routers share nothing); with N routers a client can get
    up to N times its rate, which ``docs/security.md`` states. Time comes from the caller, so
    the bucket is deterministic under test.
    """

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}  # client -> [tokens, last refill time]

    def admit(self, policy: ClientPolicy, now: float) -> bool:
        """Take one token for ``policy``'s client; False when its bucket is empty."""
        rate = policy.rate_limit_rps
        if rate is None:
            return True
        capacity = policy.burst or rate
        bucket = self._buckets.get(policy.name)
        if bucket is None:
            bucket = self._buckets[policy.name] = [capacity, now]
        tokens = min(capacity, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
