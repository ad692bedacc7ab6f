"""Talking to Kafka: client settings, the consumer/producer seam (aiokafka, in memory), outbox, admin, readers.

Everything above this package reaches Kafka through :class:`Transport` (the batch loop) or
through the helpers here; :class:`MemoryTransport` is the in-memory double of the seam, for
tests of code built on it.
"""

from streams.transport.admin import ensure_topics, router_running
from streams.transport.headers import Headers, headers_checked, headers_of, to_headers
from streams.transport.kafka import KafkaConsumer, KafkaTransport
from streams.transport.memory import MemoryBroker, MemoryTransport, RecordRefused
from streams.transport.outbox import Outbox
from streams.transport.protocols import Batch, Consumer, Producer, Record, RecordBatch, Transport
from streams.transport.settings import SASL_MECHANISMS, KafkaSettings
from streams.transport.tail import TopicTail
from streams.transport.topic_reader import read_topic

__all__ = [
    "SASL_MECHANISMS",
    "Batch",
    "Consumer",
    "Headers",
    "KafkaConsumer",
    "KafkaSettings",
    "KafkaTransport",
    "MemoryBroker",
    "MemoryTransport",
    "Outbox",
    "Producer",
    "Record",
    "RecordBatch",
    "RecordRefused",
    "TopicTail",
    "Transport",
    "ensure_topics",
    "headers_checked",
    "headers_of",
    "read_topic",
    "router_running",
    "to_headers",
]
