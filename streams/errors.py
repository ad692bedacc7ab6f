"""Errors raised at the Kafka edge; all derive from the project's root ``ScorelineError``."""

from __future__ import annotations

from schemas.errors import ScorelineError

__all__ = ["BrokerError", "KafkaUnavailable", "PartitionRevoked"]


class BrokerError(ScorelineError):
    """The local broker could not be fetched, started or stopped; the message says why and what to do."""

    code = "broker_error"


class KafkaUnavailable(ScorelineError):
    """No Kafka answered at the configured bootstrap address in time."""

    code = "kafka_unavailable"
    retriable = True


class PartitionRevoked(ScorelineError):
    """A seek or commit named partitions this group member no longer owns: a rebalance took them.

    Not a failure of the batch: the partitions' new owner replays from the last commit.
    """

    code = "partition_revoked"
    retriable = True
