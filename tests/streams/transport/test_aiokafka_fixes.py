"""The aiokafka patch still sits on the path it fixes, and still refreshes the metadata there.

``streams/transport/aiokafka_fixes.py`` wraps an internal method of aiokafka 0.14; ``pyproject.toml``
pins aiokafka below 0.15 so that a release that moves the path arrives by a change of ours, and this
test is what that change must pass.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import NotLeaderForPartitionError

import streams.transport.kafka  # noqa: F401 - installs the fix, as every Kafka user of scoreline does


def test_the_position_lookup_still_goes_through_the_wrapped_method():
    assert getattr(Fetcher._proc_offset_request, "_scoreline_fix", False)
    assert "self._proc_offset_request(" in inspect.getsource(Fetcher._update_fetch_positions)


async def test_a_broker_that_no_longer_leads_makes_the_fetcher_refresh_its_metadata():
    refreshed = []

    async def send(node_id, request):
        # A ListOffsets answer of version 1+: (topic, [(partition, error_code, timestamp, offset)]).
        error = NotLeaderForPartitionError.errno
        return SimpleNamespace(API_VERSION=1, topics=[("t", [(0, error, -1, -1)])])

    fetcher = SimpleNamespace(_isolation_level=0,
                              _client=SimpleNamespace(send=send, force_metadata_update=lambda: refreshed.append(1)))
    with pytest.raises(NotLeaderForPartitionError):
        await Fetcher._proc_offset_request(fetcher, 1, {"t": [(0, -1)]})
    assert refreshed == [1]
