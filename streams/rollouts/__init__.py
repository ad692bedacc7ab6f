"""Guarded rollouts on Kafka: the rollouts topic's records, a step's evidence, the controller role, and the client
the ``scoreline rollout`` commands use."""

from streams.rollouts.client import RolloutClient
from streams.rollouts.controller import RolloutController
from streams.rollouts.records import Command, Rollout, RolloutLog, RolloutRefused, RolloutSpec, State, Step

__all__ = ["Command", "Rollout", "RolloutClient", "RolloutController", "RolloutLog", "RolloutRefused", "RolloutSpec",
           "State", "Step"]
