"""SASL (PLAIN and SCRAM) and ACLs on a second local broker: a tenant reaches only its own topics.

The broker runs on its own port and home with a ``SASL_PLAINTEXT`` listener and KRaft's
``StandardAuthorizer`` (``BrokerSettings(sasl=...)``); the shared broker is never touched.
Client principals ``A`` and ``B`` get the ACLs ``docs/security.md`` lists for a client;
``scoreline`` is the service principal (a super user).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from aiokafka.protocol.admin import CreateAclsRequest

from schemas.messages import Status
from streams.broker.local import SaslListener
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.topics import TopicLayout, TopicSpec
from streams.transport.admin import ensure_topics
from streams.transport.kafka import aiokafka_consumer, aiokafka_producer
from streams.transport.settings import KafkaSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "faults"))
from fault_scenarios import rules_under, second_broker  # noqa: E402

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

SASL = SaslListener(users=(("scoreline", "scoreline-secret"), ("A", "a-secret"), ("B", "b-secret")),
                    super_users=("scoreline",))
PREFIX = "scoreline."

# Kafka's wire codes (org.apache.kafka.common.acl / resource).
TOPIC, LITERAL, ALLOW, ANY_HOST = 2, 3, 3, "*"
READ, WRITE, DESCRIBE = 3, 4, 8


async def create_acls(admin, principal: str, topic: str, operations: tuple[int, ...]) -> None:
    """Allow ``principal`` ``operations`` on one topic (aiokafka's admin client has no create_acls)."""
    for operation in operations:
        response = await admin._send_request(CreateAclsRequest(TOPIC, topic, LITERAL, f"User:{principal}",
                                                               ANY_HOST, operation, ALLOW))
        errors = [(code, message) for code, message in response.creation_responses if code]
        assert not errors, errors


def as_user(bootstrap: str, user: str, mechanism: str, monkeypatch) -> KafkaSettings:
    """The settings a scoreline process started with ``SCORELINE_SASL_*`` would use."""
    monkeypatch.setenv("SCORELINE_SASL_MECHANISM", mechanism)
    monkeypatch.setenv("SCORELINE_SASL_USERNAME", user)
    monkeypatch.setenv("SCORELINE_SASL_PASSWORD", dict(SASL.users)[user])
    monkeypatch.delenv("SCORELINE_SECURITY_PROTOCOL", raising=False)  # defaults to SASL_PLAINTEXT
    settings = KafkaSettings.from_env(bootstrap, client_id=f"acl-{user}")
    for name in ("SCORELINE_SASL_MECHANISM", "SCORELINE_SASL_USERNAME", "SCORELINE_SASL_PASSWORD"):
        monkeypatch.delenv(name)
    return settings


async def produce(kafka: KafkaSettings, topic: str) -> None:
    producer = aiokafka_producer(kafka, "acl-test", request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"k")
    finally:
        await producer.stop()


async def read_one(kafka: KafkaSettings, topic: str, timeout_ms: int = 10_000) -> bytes | None:
    """The first record of partition 0, or None if none can be read (for an unauthorized topic
    aiokafka logs "not authorized" and returns nothing rather than raising)."""
    consumer = aiokafka_consumer(kafka, group_id=None, role="acl-test", request_timeout_ms=10_000)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records = await consumer.getmany(tp, timeout_ms=timeout_ms)
        return records[tp][0].value if records.get(tp) else None
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    broker = second_broker(tmp_path_factory.mktemp("sasl"), sasl=SASL)
    broker.start(timeout=180)
    try:
        yield broker
    finally:
        broker.stop(timeout=30)


async def test_a_tenant_reaches_its_own_topics_and_no_one_elses(sasl_broker, monkeypatch):
    bootstrap = sasl_broker.settings.bootstrap
    service = KafkaSettings(bootstrap, security=SASL.client_options("scoreline", "SCRAM-SHA-512"))
    topics = {f"{PREFIX}{kind}.{tenant}": 1 for kind in ("requests", "replies") for tenant in "AB"}
    await ensure_topics(bootstrap, [TopicSpec(t, n) for t, n in topics.items()], **service.security)
    admin = service.admin()
    await admin.start()
    try:
        for tenant in "AB":
            await create_acls(admin, tenant, f"{PREFIX}requests.{tenant}", (WRITE, DESCRIBE))
            await create_acls(admin, tenant, f"{PREFIX}replies.{tenant}", (READ, DESCRIBE))
    finally:
        await admin.close()
    # The service principal writes a reply for each tenant (a super user: no ACL needed).
    for tenant in "AB":
        await produce(service, f"{PREFIX}replies.{tenant}")

    a = as_user(bootstrap, "A", "SCRAM-SHA-256", monkeypatch)
    b = as_user(bootstrap, "B", "PLAIN", monkeypatch)
    await produce(a, f"{PREFIX}requests.A")
    assert await read_one(a, f"{PREFIX}replies.A") == b"{}"
    await produce(b, f"{PREFIX}requests.B")
    assert await read_one(b, f"{PREFIX}replies.B") == b"{}"

    with pytest.raises(TopicAuthorizationFailedError):
        await produce(a, f"{PREFIX}requests.B")
    assert await read_one(a, f"{PREFIX}replies.B", timeout_ms=3000) is None  # B's reply is there, A cannot see it
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(b, f"{PREFIX}replies.B")  # a client never writes results, not even its own


async def test_a_wrong_password_is_refused(sasl_broker):
    wrong = KafkaSettings(sasl_broker.settings.bootstrap, security={
        **SASL.client_options("A", "SCRAM-SHA-256"), "sasl_plain_password": "guess"})
    with pytest.raises(KafkaError):
        await produce(wrong, f"{PREFIX}requests.A")


async def test_the_pipeline_runs_as_the_service_principal(sasl_broker):
    """Router, worker and a client, all through KafkaSettings with SCRAM: a request is answered."""
    from streams.client.score_client import ScoreClient
    from workflows import ModelRegistry, sample_items

    service = KafkaSettings(sasl_broker.settings.bootstrap, security=SASL.client_options("scoreline", "SCRAM-SHA-256"))
    layout = TopicLayout(prefix="sasl.", request_partitions=1, shard_partitions=1, reply_partitions=1)
    rules = rules_under(layout)
    async with Pipeline(service, layout, rules, ModelRegistry.default(), PipelineOptions(roles=("router", "worker"))) \
            as pipeline:
        await pipeline.wait_ready()
        async with ScoreClient(service, "demo", layout=layout) as client:
            item = sample_items("fraud-score", 1, seed=1)[0]
            result = await client.score("fraud-score", item.context, item.payload, timeout=60)
    assert result.status == Status.OK
