"""Consumer groups on the cluster: whether a role's group has members."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka import KafkaSettings
from streams.topics import TopicLayout

__all__ = ["router_running"]


async def router_running(kafka: KafkaSettings, layout: TopicLayout) -> bool:
    """Whether the router group of ``layout`` has members, i.e. someone routes what is published."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **kafka.security)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([f"{layout.prefix}router"])
        return any(group["members"] for r in responses for group in r.to_object()["groups"])
    except Exception:  # no such group yet, or no coordinator: nobody routes
        return False
    finally:
        await admin.close()
