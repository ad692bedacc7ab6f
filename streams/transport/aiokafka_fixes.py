"""A fix to aiokafka 0.14 that scoreline applies on import: stale leaders in offset lookups refresh the metadata.

When a consumer has to look up a partition's position (after an assignment, a seek, an
offset out of range), aiokafka's fetcher asks the partition's leader for it
(``Fetcher._update_fetch_positions`` -> ``_proc_offset_request``). If that broker is no longer
the leader, the answer is ``NotLeaderForPartitionError``; the fetcher logs it, waits
``retry_backoff_ms`` and asks **the same broker again**, because nothing refreshes the
metadata on that path (``_retrieve_offsets``, the other caller, does). The partition then stays
unconsumed until the periodic refresh (``metadata_max_age_ms``, five minutes by default).

Seen on the three-node cluster: a leader paused with SIGSTOP for 20 s, then resumed; one
worker's shard partition looped on the old leader for minutes, 258 of 924 requests unanswered
within three minutes (``tests/faults/cluster_scenarios.py``, ``pause_leader``). Kafka's Java
client had the same loop and fixed it the same way (KAFKA-9535: update metadata upon retrying
ListOffsets).
"""

from __future__ import annotations

import functools
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import KafkaError

__all__ = ["install"]


def install() -> None:
    """Make ``Fetcher._proc_offset_request`` ask for fresh metadata when a broker says it no longer leads."""
    original = Fetcher._proc_offset_request
    if getattr(original, "_scoreline_fix", False):
        return

    @functools.wraps(original)
    async def proc_offset_request(self: Fetcher, node_id: int, topic_data: Any) -> Any:
        try:
            return await original(self, node_id, topic_data)
        except KafkaError as exc:
            if exc.invalid_metadata:  # NotLeaderForPartition, LeaderNotAvailable, UnknownTopicOrPartition, ...
                self._client.force_metadata_update()  # the retry then goes to the new leader
            raise

    proc_offset_request._scoreline_fix = True  # type: ignore[attr-defined]
    Fetcher._proc_offset_request = proc_offset_request
