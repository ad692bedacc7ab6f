"""An admin client that rides through a dead broker: what scoreline's startup and checks ask the cluster with."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

__all__ = ["ClusterAdmin", "ADMIN_RETRY_S"]

log = logging.getLogger(__name__)

ADMIN_RETRY_S = 60.0
"""How long a request is tried again on other brokers before its error is raised."""
ATTEMPT_S = 5.0
"""Longest wait for one broker (or the controller) to take one attempt."""


class ClusterAdmin(AIOKafkaAdminClient):
    """``AIOKafkaAdminClient`` that retries a request another broker can serve.

    aiokafka's admin client sends each request to a random known broker, and a request for the
    controller to whichever broker the metadata names. When that broker has just died (a
    ``kill -9``, a hung JVM) the request fails (``NodeNotReadyError``, a connection error) or
    waits out the 40 s request timeout, although two other brokers would answer. This one tries
    again, on fresh metadata, with a bounded wait per attempt, for :data:`ADMIN_RETRY_S`; errors
    that are not retriable (a topic that exists, an ACL) are raised at once.
    """

    async def _send_request(self, request: Any, node_id: int | None = None) -> Any:
        if node_id is not None:  # a request for one broker in particular (a group's coordinator)
            return await super()._send_request(request, node_id)
        return await self._retrying(lambda: super(ClusterAdmin, self)._send_request(request))

    async def _send_to_controller(self, request: Any) -> Any:
        return await self._retrying(lambda: super(ClusterAdmin, self)._send_to_controller(request))

    async def _retrying(self, attempt: Any) -> Any:
        deadline = time.monotonic() + ADMIN_RETRY_S
        while True:
            try:
                return await asyncio.wait_for(attempt(), ATTEMPT_S)
            except (TimeoutError, KafkaError) as exc:
                if isinstance(exc, KafkaError) and not exc.retriable or time.monotonic() > deadline:
                    raise
                log.debug("admin request failed (%r); trying another broker", exc)
            await asyncio.sleep(0.2)
            try:
                await asyncio.wait_for(self._client.force_metadata_update(), ATTEMPT_S)
            except (TimeoutError, KafkaError):
                pass  # the next attempt fails or succeeds on its own
