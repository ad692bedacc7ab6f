"""The records of the rollouts topic (``<prefix>rollouts``, compacted, one partition), and what the topic holds.

Three kinds of record, told apart by their key:

- ``<objective>``: the state of that objective's latest rollout (:class:`Rollout`). Only the
  controller writes these; compaction keeps the newest, so a restarted controller resumes from it.
- ``done.<rollout id>``: a finished rollout's final state, kept for ``rollout history``.
- ``command.<command id>``: a request from the command line (:class:`Command`: start, pause,
  resume, abort). The controller applies it, records its id in the rollout's state, then deletes
  it with a tombstone, so every command is applied once, whichever controller applies it.

The values are JSON (orjson). Nothing here talks to Kafka.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.errors import ScorelineError
from streams.transport.protocols import Record

__all__ = ["Command", "Rollout", "RolloutLog", "RolloutRefused", "RolloutSpec", "State", "Step", "command_key",
           "done_key", "fold", "ACTIONS", "ACTIVE", "FINISHED"]

COMMAND_PREFIX = "command."
DONE_PREFIX = "done."
EPOCH_KEY = "epoch"
"""The key a controller writes its epoch under as it becomes active: one more than any it read. A state record
with an older epoch comes from a deposed controller (paused or cut off while another took over) and is ignored."""
ACTIONS = ("start", "pause", "resume", "abort")


class State:
    """The ``state`` of a rollout."""

    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


ACTIVE = frozenset({State.RUNNING, State.PAUSED})
"""States in which a rollout holds its objective: a second ``start`` is refused."""
FINISHED = frozenset({State.PROMOTED, State.ROLLED_BACK, State.ABORTED})


class RolloutRefused(ScorelineError):
    """A rollout command that cannot be applied (e.g. a second rollout of one objective)."""

    code = "rollout_refused"


@dataclass(frozen=True)
class RolloutSpec:
    """What ``rollout start`` asked for."""

    objective: str
    candidate: str
    steps: tuple[float, ...]
    step_seconds: float
    min_samples: int
    max_samples: int
    guards: tuple[str, ...]
    """Each guard in its command-line form (``routing.rollout.parse_guard``)."""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RolloutSpec:
        return cls(objective=str(doc["objective"]), candidate=str(doc["candidate"]),
                   steps=tuple(float(s) for s in doc["steps"]), step_seconds=float(doc["step_seconds"]),
                   min_samples=int(doc["min_samples"]), max_samples=int(doc["max_samples"]),
                   guards=tuple(str(g) for g in doc["guards"]))


@dataclass
class Step:
    """One step: the canary percentage it published, under which rules version, and what decided it."""

    percent: float
    rules_version: int | None = None
    """The version that put this step in force (None until published)."""
    started_ms: int | None = None
    ended_ms: int | None = None
    decision: str | None = None
    """``advance``, ``roll_back``, ``pause``, or None while the step runs."""
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    """``candidate`` and ``incumbent``: results, errors, error rate and latency quantiles in the step's window."""
    judgements: list[dict[str, Any]] = field(default_factory=list)
    """Each guard's latest judgement: guard, verdict, value, interval, threshold, samples, reason."""
    resumed: bool = False
    """Begun by ``rollout resume``: over the rules in force then, whatever changed them by hand."""


@dataclass
class Rollout:
    """One rollout's state, as the controller keeps it on the topic."""

    id: str
    spec: RolloutSpec
    incumbent: str
    """The objective's default when the rollout started: what the candidate is compared with."""
    state: str
    steps: list[Step]
    step: int = 0
    """Index of the current step in ``steps``."""
    reason: str = ""
    started_ms: int = 0
    updated_ms: int = 0
    started_by: str = ""
    final_rules_version: int | None = None
    """The version that promoted the candidate or took the canary away."""
    applied: list[str] = field(default_factory=list)
    """Ids of the commands applied to it (the latest few)."""
    epoch: int = 0
    """The epoch of the controller that wrote it (``EPOCH_KEY``); 0 before controllers had epochs."""

    @property
    def objective(self) -> str:
        return self.spec.objective

    @property
    def candidate(self) -> str:
        return self.spec.candidate

    @property
    def current(self) -> Step:
        return self.steps[min(self.step, len(self.steps) - 1)]

    @property
    def percent(self) -> float:
        """The candidate's share of the objective's traffic now (100 once promoted, 0 once rolled back)."""
        if self.state == State.PROMOTED:
            return 100.0
        if self.state in (State.ROLLED_BACK, State.ABORTED):
            return 0.0
        published = [s for s in self.steps if s.rules_version is not None]
        return published[-1].percent if published else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["objective"], doc["candidate"], doc["percent"] = self.objective, self.candidate, self.percent
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Rollout:
        return cls(id=str(doc["id"]), spec=RolloutSpec.from_json(doc["spec"]), incumbent=str(doc["incumbent"]),
                   state=str(doc["state"]), steps=[Step(**s) for s in doc["steps"]], step=int(doc["step"]),
                   reason=str(doc.get("reason", "")), started_ms=int(doc.get("started_ms", 0)),
                   updated_ms=int(doc.get("updated_ms", 0)), started_by=str(doc.get("started_by", "")),
                   final_rules_version=doc.get("final_rules_version"), applied=list(doc.get("applied", [])),
                   epoch=int(doc.get("epoch", 0)))


@dataclass(frozen=True)
class Command:
    """A request from ``scoreline rollout start / pause / resume / abort``."""

    id: str
    action: str
    objective: str
    by: str
    at_ms: int
    spec: RolloutSpec | None = None
    """For ``start``."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Command:
        spec = doc.get("spec")
        return cls(id=str(doc["id"]), action=str(doc["action"]), objective=str(doc["objective"]),
                   by=str(doc.get("by", "")), at_ms=int(doc.get("at_ms", 0)),
                   spec=RolloutSpec.from_json(spec) if spec else None)


def command_key(command_id: str) -> str:
    return f"{COMMAND_PREFIX}{command_id}"


def done_key(rollout_id: str) -> str:
    return f"{DONE_PREFIX}{rollout_id}"


def encode(value: Rollout | Command) -> bytes:
    return orjson.dumps(value.to_json())


@dataclass
class RolloutLog:
    """What the rollouts topic says, read in order: each objective's latest rollout, the finished ones, and the
    commands not yet applied."""

    current: dict[str, Rollout] = field(default_factory=dict)
    done: dict[str, Rollout] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    """Commands written and not yet applied (no tombstone yet), by id, in the order written."""
    skipped: list[str] = field(default_factory=list)
    """Records that could not be read, as ``key@offset: why``."""
    epoch: int = 0
    """The newest controller epoch read: state records written under an older one are ignored."""
    fenced: list[str] = field(default_factory=list)
    """State records ignored because a deposed controller wrote them, as ``key@offset: why``."""

    def take(self, key: str, value: bytes | None, offset: int = -1) -> None:
        """Fold one record into what the log says."""
        try:
            if key == EPOCH_KEY:
                if value is not None:
                    self.epoch = max(self.epoch, int(value))
                return
            if key.startswith(COMMAND_PREFIX):
                command_id = key[len(COMMAND_PREFIX):]
                if value is None:
                    self.commands.pop(command_id, None)
                else:
                    self.commands[command_id] = Command.from_json(orjson.loads(value))
            elif value is None:
                return
            else:
                rollout = Rollout.from_json(orjson.loads(value))
                if rollout.epoch < self.epoch:
                    self.fenced.append(f"{key}@{offset}: written in epoch {rollout.epoch}, after epoch "
                                       f"{self.epoch} began")
                    return
                self.epoch = max(self.epoch, rollout.epoch)
                if key.startswith(DONE_PREFIX):
                    self.done[rollout.id] = rollout
                else:
                    self.current[key] = rollout
        except (ValueError, KeyError, TypeError) as exc:
            self.skipped.append(f"{key}@{offset}: {type(exc).__name__}: {exc}")

    def history(self, objective: str | None = None) -> list[Rollout]:
        """Every rollout kept, finished or not, oldest first."""
        every = {r.id: r for r in self.done.values()} | {r.id: r for r in self.current.values()}
        return sorted((r for r in every.values() if objective is None or r.objective == objective),
                      key=lambda r: r.started_ms)

    def active(self, objective: str) -> Rollout | None:
        rollout = self.current.get(objective)
        return rollout if rollout is not None and rollout.state in ACTIVE else None

    def applied(self, command_id: str) -> Rollout | None:
        """The rollout a command was applied to, if it was."""
        return next((r for r in self.current.values() if command_id in r.applied), None)


def fold(records: list[Record]) -> RolloutLog:
    """The log ``records`` (the topic read in order) make."""
    log = RolloutLog()
    for record in records:
        key = record.key.decode("utf-8", "replace") if record.key is not None else ""
        log.take(key, record.value, record.offset)
    return log
