"""The local Apache Kafka (KRaft) that development, the tests and the demo run on: its settings, status and process."""

from streams.broker.config import DEFAULT_KAFKA_VERSION, BrokerSettings, BrokerStatus, SaslListener, scoreline_home
from streams.broker.local import LocalBroker

__all__ = ["DEFAULT_KAFKA_VERSION", "BrokerSettings", "BrokerStatus", "LocalBroker", "SaslListener", "scoreline_home"]
