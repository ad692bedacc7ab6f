"""How scoreline's Kafka clients are made: one place for connection, security and tuning."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = ["KafkaSettings", "Headers", "headers_of", "to_headers"]

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class KafkaSettings:
    """Connection and client tuning shared by every scoreline process."""

    bootstrap: str
    """``host:port[,host:port]`` of the cluster."""
    client_id: str = "scoreline"
    """Prefix of the Kafka client ids, visible in broker logs and quotas."""
    security: Mapping[str, Any] = field(default_factory=dict)
    """aiokafka security options passed through as given (``security_protocol``, ``sasl_mechanism``,
    ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_context``)."""
    linger_ms: int = 2
    """How long a producer waits to fill a batch: a little latency for far fewer requests."""
    max_batch_bytes: int = 512 * 1024
    """Producer batch size per partition."""
    fetch_max_records: int = 1000
    """Most records one ``getmany`` returns, i.e. the largest scoring batch."""

    @classmethod
    def from_env(cls, bootstrap: str, **overrides: Any) -> "KafkaSettings":
        """Settings with SASL/SSL taken from ``SCORELINE_SECURITY_PROTOCOL``, ``SCORELINE_SASL_*``."""
        security: dict[str, Any] = {}
        if protocol := os.environ.get("SCORELINE_SECURITY_PROTOCOL"):
            security["security_protocol"] = protocol
        if mechanism := os.environ.get("SCORELINE_SASL_MECHANISM"):
            security["sasl_mechanism"] = mechanism
            security["sasl_plain_username"] = os.environ.get("SCORELINE_SASL_USERNAME")
            security["sasl_plain_password"] = os.environ.get("SCORELINE_SASL_PASSWORD")
        if protocol and "SSL" in protocol:
            from aiokafka.helpers import create_ssl_context

            security["ssl_context"] = create_ssl_context(cafile=os.environ.get("SCORELINE_SSL_CAFILE"))
        return cls(bootstrap=bootstrap, security=security, **overrides)

    def producer(self, role: str, **options: Any) -> AIOKafkaProducer:
        """An idempotent producer with acks from all replicas: retries never duplicate a record."""
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-{role}",
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
            max_batch_size=self.max_batch_bytes,
            **self.security,
            **options,
        )

    def consumer(self, *topics: str, group_id: str | None, role: str, **options: Any) -> AIOKafkaConsumer:
        """A consumer that commits only what scoreline says it may (no auto-commit)."""
        defaults: dict[str, Any] = dict(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-{role}",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.fetch_max_records,
            fetch_max_wait_ms=50,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=20_000,
        )
        defaults.update(self.security)
        defaults.update(options)
        return AIOKafkaConsumer(*topics, **defaults)


def headers_of(raw: tuple[tuple[str, bytes], ...] | list | None) -> dict[str, str]:
    """A record's headers as a dict of strings (last value wins; undecodable values replaced)."""
    if not raw:
        return {}
    return {k: v.decode("utf-8", "replace") if v is not None else "" for k, v in raw}


def to_headers(values: Mapping[str, str | None]) -> Headers:
    """Kafka headers from a dict, leaving out None values."""
    return [(k, v.encode()) for k, v in values.items() if v is not None]
