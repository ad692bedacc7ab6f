"""Facts on Kafka: the fact topics' record format, publishing facts, and materialising them in a worker's store."""

from streams.facts.materialiser import FactTopicMaterialiser, facts_of, worker_fact_source
from streams.facts.records import SPEC_KEY
from streams.facts.topic import FactTopicError, publish_facts

__all__ = ["SPEC_KEY", "FactTopicError", "FactTopicMaterialiser", "facts_of", "publish_facts", "worker_fact_source"]
