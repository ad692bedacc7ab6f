"""How scoreline reaches Kafka: one place for connection, security and tuning.

:class:`KafkaSettings` makes no consumer or producer itself: a
:class:`~streams.transport.kafka.KafkaTransport` over it does, as the transport's Protocol types.
aiokafka's own clients with these settings come from ``aiokafka_consumer`` and ``aiokafka_producer``
in :mod:`streams.transport.kafka`, for the transport's adapters, the broker tooling, the bench, and
tests acting as a plain Kafka client (``tests/test_import_graph.py`` holds everything else to that).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.transport.admin_client import ClusterAdmin
from streams.transport.aiokafka_fixes import install as _install_aiokafka_fixes

__all__ = ["KafkaSettings", "SASL_MECHANISMS"]

_install_aiokafka_fixes()  # every process that connects imports this, faust's consumer included (aiokafka_fixes.py)

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""The SASL mechanisms scoreline's clients (aiokafka and faust) speak."""


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
    backfill_slice: int = 200
    """Most backfill records one batch takes: what a live request arriving mid-batch may wait behind."""

    @classmethod
    def from_env(cls, bootstrap: str, **overrides: Any) -> KafkaSettings:
        """Settings with SASL/SSL taken from the environment.

        ``SCORELINE_SECURITY_PROTOCOL`` (``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL``;
        default ``SASL_PLAINTEXT`` when a mechanism is set, so credentials are never silently unused),
        ``SCORELINE_SASL_MECHANISM`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``),
        ``SCORELINE_SASL_USERNAME``, ``SCORELINE_SASL_PASSWORD``, and for SSL ``SCORELINE_SSL_CAFILE``
        plus, for client certificates, ``SCORELINE_SSL_CERTFILE``, ``SCORELINE_SSL_KEYFILE``,
        ``SCORELINE_SSL_KEY_PASSWORD``.
        """
        env = os.environ
        security: dict[str, Any] = {}
        protocol = env.get("SCORELINE_SECURITY_PROTOCOL")
        if mechanism := env.get("SCORELINE_SASL_MECHANISM"):
            if mechanism not in SASL_MECHANISMS:
                raise ValueError(f"SCORELINE_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                                 f"got {mechanism!r}")
            protocol = protocol or "SASL_PLAINTEXT"
            # aiokafka takes SCRAM credentials through the same two options as PLAIN.
            security["sasl_mechanism"] = mechanism
            security["sasl_plain_username"] = env.get("SCORELINE_SASL_USERNAME")
            security["sasl_plain_password"] = env.get("SCORELINE_SASL_PASSWORD")
        if protocol:
            security["security_protocol"] = protocol
        if protocol and "SSL" in protocol:
            from aiokafka.helpers import create_ssl_context

            security["ssl_context"] = create_ssl_context(
                cafile=env.get("SCORELINE_SSL_CAFILE"), certfile=env.get("SCORELINE_SSL_CERTFILE"),
                keyfile=env.get("SCORELINE_SSL_KEYFILE"), password=env.get("SCORELINE_SSL_KEY_PASSWORD"))
        return cls(bootstrap=bootstrap, security=security, **overrides)

    def admin(self, **options: Any) -> ClusterAdmin:
        """An admin client (topic creation, metadata) with the same connection and security.

        It retries on another broker what a dead one could not take (``admin_client.ClusterAdmin``).
        """
        settings: dict[str, Any] = dict(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin")
        settings.update(self.security)
        settings.update(options)
        return ClusterAdmin(**settings)

    def faust_credentials(self) -> Any:
        """The security settings as faust's ``broker_credentials`` (None for a plaintext cluster)."""
        protocol = self.security.get("security_protocol", "PLAINTEXT")
        if protocol == "PLAINTEXT":
            return None
        import faust

        if protocol.startswith("SASL"):
            return faust.SASLCredentials(username=self.security.get("sasl_plain_username"),
                                         password=self.security.get("sasl_plain_password"),
                                         mechanism=self.security.get("sasl_mechanism", "PLAIN"),
                                         ssl_context=self.security.get("ssl_context"))
        return faust.SSLCredentials(self.security.get("ssl_context"))
