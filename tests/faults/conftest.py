"""Fixtures for the fault suite: an environment under a topic prefix of its own, removed afterwards."""

from __future__ import annotations

import pytest
from fault_scenarios import Env

from streams.transport.settings import KafkaSettings
from workflows import ModelRegistry


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry.default()


@pytest.fixture
async def env(kafka_bootstrap, kafka_admin, unique, registry, tmp_path) -> Env:
    env = Env.make(KafkaSettings(bootstrap=kafka_bootstrap), f"t{unique}.", tmp_path, registry)
    yield env
    topics = [t for t in await kafka_admin.list_topics() if t.startswith(env.layout.prefix)]
    kafka_admin.created.extend(topics)
