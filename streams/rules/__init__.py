"""Routing rules on Kafka: the snapshot a process holds, the compacted rules topic, publishing and following it."""

from streams.rules.holder import RulesHolder
from streams.rules.log import LATEST_KEY, RulesLog, RulesRecord, UnknownRulesVersion
from streams.rules.publisher import RulesPublisher
from streams.rules.watcher import RulesWatcher

__all__ = ["LATEST_KEY", "RulesHolder", "RulesLog", "RulesPublisher", "RulesRecord", "RulesWatcher",
           "UnknownRulesVersion"]
