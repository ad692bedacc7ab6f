"""Fixtures of the command-line tests."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def prefix(kafka_bootstrap):
    """A unique topic prefix; its topics are deleted afterwards."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    name = f"t{uuid.uuid4().hex[:10]}."
    yield name

    async def cleanup() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(name)]
            if topics:
                await admin.delete_topics(topics)
        finally:
            await admin.close()

    asyncio.run(cleanup())
