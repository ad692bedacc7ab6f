"""What ``scoreline rollout`` does on Kafka: read the rollouts topic, write a command, wait for the controller."""

from __future__ import annotations

import asyncio
import time
import uuid

from routing import Rules
from streams.errors import KafkaUnavailable
from streams.rollouts.records import (
    Command,
    Rollout,
    RolloutLog,
    RolloutRefused,
    RolloutSpec,
    command_key,
    encode,
    fold,
)
from streams.rollouts.steps import check_start
from streams.rules.log import PARTITION, quietly, read_to_end
from streams.rules.publisher import RulesPublisher, operator_name
from streams.topics import TopicLayout
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import KafkaError, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["RolloutClient", "RolloutRefused"]


class RolloutClient:
    """Reads rollouts and sends commands to whichever controller is active on the topic."""

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, *, timeout: float = 15.0,
                 transport: Transport | None = None) -> None:
        self.kafka, self.layout, self.timeout = kafka, layout, timeout
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        self.topic = layout.rollouts

    async def read(self) -> RolloutLog:
        """The topic read to its end (empty if it does not exist yet)."""
        return fold(await read_to_end(self.kafka, self.topic, self.timeout, transport=self.transport))

    async def check_start(self, spec: RolloutSpec, fallback: Rules) -> tuple[Rules, tuple[float, ...]]:
        """Refuse a start that cannot run, saying why (:func:`~streams.rollouts.steps.check_start`, over the
        rules in force: the latest published, else ``fallback``); return those rules and the steps."""
        current = (await self.read()).active(spec.objective)
        latest = await RulesPublisher(self.kafka, self.layout, timeout=self.timeout, transport=self.transport).latest()
        rules = latest.rules() if latest is not None else fallback
        return rules, check_start(spec, rules, current)

    async def send(self, action: str, objective: str, spec: RolloutSpec | None = None,
                   by: str | None = None) -> Command:
        """Write a command for the controller."""
        command = Command(id=uuid.uuid4().hex[:12], action=action, objective=objective, by=by or operator_name(),
                          at_ms=int(time.time() * 1000), spec=spec)
        await self.transport.ensure_topics([s for s in self.layout.specs(()) if s.name == self.topic],
                                           replication_factor=self.layout.replication_factor)
        producer = self.transport.producer("rollout-cli")
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
            await producer.send_and_wait(self.topic, encode(command), key=command_key(command.id).encode(),
                                         partition=PARTITION)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"cannot write to {self.topic} at {self.kafka.bootstrap}: {exc!r}") from exc
        finally:
            await quietly(producer.stop())
        return command

    async def wait_applied(self, command: Command, timeout: float) -> tuple[bool, Rollout | None]:
        """Wait until a controller has dealt with ``command``: (applied?, the objective's rollout).

        ``(False, ...)`` after the controller refused it (it deletes the command without applying
        it), or when no controller took it within ``timeout`` (the command then stays queued).
        """
        deadline = time.monotonic() + timeout
        while True:
            log = await self.read()
            applied = log.applied(command.id)
            if applied is not None:
                return True, applied
            if command.id not in log.commands or time.monotonic() >= deadline:
                return False, log.current.get(command.objective)
            await asyncio.sleep(0.5)

