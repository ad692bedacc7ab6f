"""Fixtures for pipeline tests: an isolated topic prefix per test, removed afterwards."""

from __future__ import annotations

import pytest
from streams_testing import rules_under

from streams.topics import TopicLayout
from streams.transport.settings import KafkaSettings
from workflows import ModelRegistry


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap=kafka_bootstrap)


@pytest.fixture
async def layout(kafka_admin, unique: str) -> TopicLayout:
    """Every topic of this test under its own prefix; all of them deleted at the end."""
    layout = TopicLayout(prefix=f"t{unique}.", request_partitions=2, shard_partitions=2, reply_partitions=2)
    yield layout
    topics = [t for t in await kafka_admin.list_topics() if t.startswith(layout.prefix)]
    kafka_admin.created.extend(topics)


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry.default()


@pytest.fixture
def rules(layout):
    return rules_under(layout)


@pytest.fixture
def shadow_all_rules(layout):
    return rules_under(layout, "rules-shadow-all.json")
