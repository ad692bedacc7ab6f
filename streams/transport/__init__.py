"""Talking to Kafka: client settings, the consumer/producer seam (aiokafka, in memory), outbox, admin, readers.

Everything above this package reaches Kafka through :class:`Transport` (group consumers,
producers, readers without a group, lag, topic creation) or through the helpers here, and names
Kafka's types and errors through :mod:`streams.transport.protocols`; only this package, the local
broker and the bench import aiokafka (``tests/test_import_graph.py``). Compacted topics are read
one way, :class:`Follower` (replay to the end, then follow). :class:`MemoryTransport` is the
in-memory double of the seam, for tests of code built on it.
"""

from streams.transport.admin import ensure_topics, router_running
from streams.transport.follow import CatchUp, Follower, read_to_end
from streams.transport.headers import Headers, headers_checked, headers_of, to_headers
from streams.transport.kafka import KafkaConsumer, KafkaReader, KafkaTransport
from streams.transport.memory import MemoryBroker, MemoryReader, MemoryTransport, RecordRefused
from streams.transport.outbox import Outbox
from streams.transport.protocols import (
    Batch,
    Consumer,
    KafkaError,
    LagReader,
    Producer,
    Reader,
    Record,
    RecordBatch,
    TopicPartition,
    TransactionalProducer,
    Transport,
)
from streams.transport.settings import SASL_MECHANISMS, KafkaSettings
from streams.transport.tail import TopicTail
from streams.transport.topic_reader import read_topic

__all__ = [
    "SASL_MECHANISMS",
    "Batch",
    "CatchUp",
    "Consumer",
    "Follower",
    "Headers",
    "KafkaConsumer",
    "KafkaError",
    "KafkaReader",
    "KafkaSettings",
    "KafkaTransport",
    "LagReader",
    "MemoryBroker",
    "MemoryReader",
    "MemoryTransport",
    "Outbox",
    "Producer",
    "Reader",
    "Record",
    "RecordBatch",
    "RecordRefused",
    "TopicPartition",
    "TopicTail",
    "TransactionalProducer",
    "Transport",
    "ensure_topics",
    "read_to_end",
    "headers_checked",
    "headers_of",
    "read_topic",
    "router_running",
    "to_headers",
]
