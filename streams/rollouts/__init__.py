"""Guarded rollouts on Kafka: the rollouts topic's records, a step's evidence, and the controller role."""
