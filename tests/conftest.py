"""Test harness: one real Apache Kafka broker per test session, unique names per test.

Where the broker comes from, in order: ``SCORELINE_BOOTSTRAP`` if set; a testcontainers
Kafka (KRaft) if a Docker engine answers; else the project's own local broker
(``scoreline broker start``), stopped again at the end if this session started it.
Broker tests carry ``@pytest.mark.kafka``; ``pytest -m "not kafka"`` runs the pure ones.
With ``CI=true`` a broker test is never skipped: a skip is turned into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _docker_engine_answers() -> bool:
    # testcontainers talks to Docker as soon as a container object is built: ask first.
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real Apache Kafka broker, shared by the whole session."""
    if bootstrap := os.environ.get("SCORELINE_BOOTSTRAP"):
        yield bootstrap
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from streams.broker.local import LocalBroker

    broker = LocalBroker()
    started_here = not broker.status().running
    status = broker.start(timeout=180)
    os.environ["SCORELINE_BOOTSTRAP"] = status.bootstrap  # subprocesses under test use it too
    try:
        yield status.bootstrap
    finally:
        os.environ.pop("SCORELINE_BOOTSTRAP", None)
        if started_here:
            broker.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for this test's topic names and group ids."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str):
    """An aiokafka admin client; deletes every topic a test registers in ``created``."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    admin.created = []  # type: ignore[attr-defined]
    try:
        yield admin
    finally:
        if admin.created:  # type: ignore[attr-defined]
            try:
                await admin.delete_topics(admin.created)  # type: ignore[attr-defined]
            finally:
                await admin.close()
        else:
            await admin.close()


def pytest_collection_modifyitems(config, items):
    """A test that reaches the broker fixture must say so: ``make test-pure`` (``-m "not kafka"``) never starts one."""
    unmarked = [item.nodeid for item in items
                if "kafka_bootstrap" in getattr(item, "fixturenames", ()) and item.get_closest_marker("kafka") is None]
    if unmarked:
        raise pytest.UsageError("tests using a broker fixture without @pytest.mark.kafka:\n  " + "\n  ".join(unmarked))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # An xfail counts too: pytest reports it as skipped, and a broker test must pass in CI.
    if IN_CI and report.skipped and item.get_closest_marker("kafka"):
        report.outcome = "failed"
        report.longrepr = f"broker test skipped in CI (not allowed): {report.longrepr}"


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """The reference models, built once per session the way ``scoreline models reference`` builds them."""
    from workflows.training.reference import build

    return build(tmp_path_factory.mktemp("reference"), date="2026-12-03")
