"""Model lineage: which objective uses which model, which facts it reads, and where they come from.

After Netflix's model lifecycle graph: one graph from the business use case down to
the data, so that "what breaks if this fact is late?" has an answer::

    objective -> rules version -> model (role: default, cell, canary, shadow; shard)
              -> workflow -> fact -> fact topic (Kafka) and fact file (dataset)

Everything here is pure: it reads a rules snapshot, model manifests and a description
of the facts, and never touches Kafka. ``scoreline lineage`` and ``scoreline models``
compose it with the shipped configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from routing import Rules
from schemas.errors import ErrorCode, ScorelineError
from workflows import Manifest

__all__ = ["FactSource", "Lineage", "LineageError", "ModelUse", "build_lineage", "model_uses", "parse_target",
           "rollout_edges", "shard_key_fields"]


class LineageError(ScorelineError):
    """An impact target that is malformed or not in the graph; the message names ``--impact``."""

    code = ErrorCode.INVALID_VALUE


class ModelUse(NamedTuple):
    """Where the rules use a model."""

    objective: str
    "The objective whose routing names the model."
    role: str
    "``default``, ``experiment <id> cell <c> (<p>%)``, ``canary <p>%`` or ``shadow <p>%``."
    path: str
    "The rules path naming it, e.g. ``objectives.fraud-score.shadow[0].model``."


@dataclass(frozen=True)
class FactSource:
    """Where one fact comes from."""

    key: str = ""
    "What the fact is keyed by (``user_id``, ``title_id``)."
    file: str | None = None
    "The dataset file it is loaded from in ``files`` mode, if any."


def _pct(p: float) -> str:
    return f"{p:g}%"


def model_uses(rules: Rules, model_id: str) -> list[ModelUse]:
    """Every place the rules route to ``model_id``, in document order."""
    return [ModelUse(*use[:3]) for use in _raw_uses(rules) if use[3] == model_id]


def shard_key_fields(rules: Rules) -> set[str]:
    """The context fields the objectives shard by (``context.user_id`` -> ``user_id``)."""
    return {obj.shard_key.rsplit(".", 1)[-1] for obj in rules.objectives.values()}


def parse_target(text: str) -> tuple[str, str]:
    """``fact:<name>`` or ``model:<id>`` -> ``(kind, name)``; raises :class:`LineageError` naming the problem."""
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("fact", "model") or not name:
        raise LineageError(f"--impact must be fact:<name> or model:<name@version>, got {text!r}")
    return kind, name


@dataclass
class Lineage:
    """The lineage graph of one rules version over a set of model packages."""

    rules_version: int
    objectives: dict[str, dict[str, Any]]
    """Objective -> ``{"shard_key", "models": {id: [roles]}}``."""
    models: dict[str, dict[str, Any]]
    """Model id -> ``{"objective", "workflow", "facts", "shard", "metrics", "uses": [...]}``."""
    facts: dict[str, dict[str, Any]]
    """Fact -> ``{"key", "scope", "topic", "file", "models"}``."""
    problems: dict[str, str] = field(default_factory=dict)
    "Packages whose manifest could not be read, with why."
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    """Guarded rollouts (``streams.rollouts`` records as JSON), when read from the cluster: each judged step is
    an evaluation between its candidate model and the rules version its evidence led to."""

    def edges(self) -> list[dict[str, str]]:
        """The graph as edges ``{"from", "to", "label"}`` between typed node ids (``kind:name``)."""
        out = []
        for name, obj in self.objectives.items():
            out.append({"from": f"objective:{name}", "to": f"rules:v{self.rules_version}", "label": "routed by"})
            for model_id, roles in obj["models"].items():
                out.append({"from": f"rules:v{self.rules_version}", "to": f"model:{model_id}",
                            "label": f"{name}: {', '.join(roles)}"})
        workflows: set[tuple[str, str]] = set()
        for model_id, model in self.models.items():
            out.append({"from": f"model:{model_id}", "to": f"workflow:{model['workflow']}", "label": "runs"})
            workflows.update((model["workflow"], f) for f in model["facts"])
        out += [{"from": f"workflow:{w}", "to": f"fact:{f}", "label": "looks up"} for w, f in sorted(workflows)]
        for name, fact in self.facts.items():
            out.append({"from": f"fact:{name}", "to": f"topic:{fact['topic']}", "label": f"kafka ({fact['scope']})"})
            if fact["file"]:
                out.append({"from": f"fact:{name}", "to": f"file:{fact['file']}", "label": "dataset"})
        return out + rollout_edges(self.rollouts)

    def to_dict(self) -> dict[str, Any]:
        """The whole graph as one JSON-able object."""
        return {"rules_version": self.rules_version, "objectives": self.objectives, "models": self.models,
                "facts": self.facts, "edges": self.edges(), "problems": self.problems,
                "rollouts": [_rollout_summary(r) for r in self.rollouts]}

    def impact(self, kind: str, name: str) -> dict[str, Any]:
        """What depends on ``fact:<name>`` or ``model:<id>``: the models, and the objectives routing to them.

        Raises:
            LineageError: no such fact or model in the graph (the message names it).
        """
        if kind == "fact":
            if name not in self.facts:
                raise LineageError(f"--impact: no fact {name!r} (have: {', '.join(sorted(self.facts))})")
            models = sorted(m for m, info in self.models.items() if name in info["facts"])
        elif kind == "model":
            if name not in self.models:
                raise LineageError(f"--impact: no model {name!r} (have: {', '.join(sorted(self.models))})")
            models = [name]
        else:
            raise LineageError(f"--impact: {kind!r} is not fact or model")
        uses = [dict(u, model=m) for m in models for u in self.models[m]["uses"]]
        objectives = sorted({u["objective"] for u in uses})
        return {"target": f"{kind}:{name}", "models": models, "objectives": objectives, "uses": uses,
                "unrouted_models": [m for m in models if not self.models[m]["uses"]]}

    def render(self) -> str:
        """The graph as an indented text tree, objective first."""
        lines = [f"lineage (rules version {self.rules_version})"]
        routed = set()
        objectives = list(self.objectives.items())
        for i, (name, obj) in enumerate(objectives):
            last = i == len(objectives) - 1 and not self._unrouted()
            lines.append(f"{_branch(last)}objective {name}  (shard key {obj['shard_key']})")
            pad = _pad(last)
            lines.append(f"{pad}└── rules v{self.rules_version}")
            models = list(obj["models"].items())
            for j, (model_id, roles) in enumerate(models):
                routed.add(model_id)
                self._render_model(lines, pad + "    ", model_id, ", ".join(roles), j == len(models) - 1)
        unrouted = self._unrouted()
        if unrouted:
            lines.append(f"└── not routed by rules v{self.rules_version}")
            for j, model_id in enumerate(unrouted):
                self._render_model(lines, "    ", model_id, "", j == len(unrouted) - 1)
        for model_id, why in sorted(self.problems.items()):
            lines.append(f"!   {model_id}: {why}")
        for rollout in self.rollouts:
            lines.append(f"rollout {rollout['id']}: {rollout['candidate']} on {rollout['objective']}, "
                         f"{rollout['state']}")
            for step in rollout["steps"]:
                if step.get("rules_version") is not None:
                    lines.append(f"    {step['percent']:g}% in rules v{step['rules_version']}: "
                                 f"{step.get('decision') or 'running'}")
        return "\n".join(lines)

    def _unrouted(self) -> list[str]:
        return sorted(m for m, info in self.models.items() if not info["uses"])

    def _render_model(self, lines: list[str], pad: str, model_id: str, roles: str, last: bool) -> None:
        info = self.models.get(model_id)
        shard = info["shard"] if info else None
        label = f"model {model_id}" + (f"  [{roles}]" if roles else "") + f"  shard {shard or '-'}"
        if info is None:
            lines.append(f"{pad}{_branch(last)}{label}  (no package!)")
            return
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in info["metrics"].items())
        lines.append(f"{pad}{_branch(last)}{label}" + (f"  ({metrics})" if metrics else ""))
        pad = pad + _pad(last)
        digest = f"  (package sha256 {info['sha256'][:12]}…)" if info.get("sha256") else ""
        lines.append(f"{pad}└── workflow {info['workflow']}{digest}")
        pad += "    "
        for k, fact in enumerate(info["facts"]):
            f = self.facts.get(fact, {})
            end = k == len(info["facts"]) - 1
            scope = "co-partitioned" if f.get("scope") == "shard" else "global: every worker holds all of it"
            lines.append(f"{pad}{_branch(end)}fact {fact}  (key {f.get('key') or '?'}; {scope})")
            sub = pad + _pad(end)
            sources = [f"topic {f['topic']}"] if f.get("topic") else []
            sources += [f"file {f['file']}"] if f.get("file") else ["file - (no dataset file)"]
            for s, source in enumerate(sources):
                lines.append(f"{sub}{_branch(s == len(sources) - 1)}{source}")


def rollout_edges(rollouts: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Each rollout step as ``model -> evidence -> rules version``: the candidate was judged on the step's
    evidence, which led to the next version (the next step's, the promotion or the rollback)."""
    out = []
    for rollout in rollouts:
        steps = [s for s in rollout["steps"] if s.get("rules_version") is not None]
        for i, step in enumerate(steps):
            if step.get("decision") in (None, "promoted"):
                continue
            node = f"evidence:{rollout['id']}@{step['percent']:g}%"
            judged = ", ".join(f"{j['guard']} {j['verdict']}" for j in step.get("judgements", ()))
            out.append({"from": f"model:{rollout['candidate']}", "to": node,
                        "label": f"{rollout['objective']}: judged at {step['percent']:g}% ({judged or 'no guard'})"})
            out.append({"from": f"rules:v{step['rules_version']}", "to": node, "label": "routed the evidence"})
            after = steps[i + 1]["rules_version"] if i + 1 < len(steps) else rollout.get("final_rules_version")
            if after is not None:
                out.append({"from": node, "to": f"rules:v{after}", "label": step["decision"]})
    return out


def _rollout_summary(rollout: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("id", "objective", "candidate", "incumbent", "state", "percent", "reason", "final_rules_version")
    return {k: rollout.get(k) for k in keep} | {"steps": [
        {k: s.get(k) for k in ("percent", "rules_version", "decision", "evidence")} for s in rollout["steps"]]}


def _branch(last: bool) -> str:
    return "└── " if last else "├── "


def _pad(last: bool) -> str:
    return "    " if last else "│   "


def build_lineage(rules: Rules, manifests: Iterable[Manifest], facts: Mapping[str, FactSource],
                  fact_topic: Callable[[str], str], *, problems: Mapping[str, str] | None = None,
                  sha256: Mapping[str, str] | None = None) -> Lineage:
    """Join the rules, the model manifests and the fact sources into one :class:`Lineage`.

    Args:
        rules: the rules version in force.
        manifests: the readable model packages.
        facts: fact name -> where it comes from (its key and dataset file).
        fact_topic: fact name -> its Kafka topic (``TopicLayout.facts``).
        problems: unreadable packages, by id, to report alongside.
        sha256: each package's sha256 (``workflows.package_sha256``): exactly which bytes would load.
    """
    keys = shard_key_fields(rules)
    manifests = list(manifests)
    models: dict[str, dict[str, Any]] = {}
    for m in manifests:
        models[m.id] = {"name": m.name, "version": m.version, "objective": m.objective, "workflow": m.workflow,
                        "facts": list(m.facts), "shard": rules.models.get(m.id), "metrics": dict(m.metrics),
                        "baseline_metrics": dict(m.baseline_metrics), "sha256": (sha256 or {}).get(m.id),
                        "uses": [{"objective": u.objective, "role": u.role, "path": u.path}
                                 for u in model_uses(rules, m.id)]}
    objectives: dict[str, dict[str, Any]] = {}
    for name, obj in rules.objectives.items():
        roles: dict[str, list[str]] = {}
        for use_model, use in ((u[3], u) for u in _raw_uses(rules) if u[0] == name):
            roles.setdefault(use_model, []).append(use[1])
        objectives[name] = {"shard_key": obj.shard_key, "models": roles}
    fact_names = sorted({f for m in manifests for f in m.facts} | set(facts))
    fact_info = {}
    for name in fact_names:
        source = facts.get(name, FactSource())
        fact_info[name] = {"key": source.key or None, "scope": "shard" if source.key in keys else "global",
                           "topic": fact_topic(name), "file": source.file,
                           "models": sorted(m.id for m in manifests if name in m.facts)}
    return Lineage(rules.version, objectives, models, fact_info, dict(problems or {}))


def _raw_uses(rules: Rules) -> list[tuple[str, str, str, str]]:
    """``(objective, role, path, model)`` for every model reference of the rules."""
    out = []
    for name, obj in rules.objectives.items():
        base = f"objectives.{name}"
        out.append((name, "default", f"{base}.default", obj.default))
        for i, exp in enumerate(obj.experiments):
            for cell in exp.cells:
                out.append((name, f"experiment {exp.id} cell {cell.name} ({_pct(exp.allocation_percent)})",
                            f"{base}.experiments[{i}].cells.{cell.name}", cell.model))
        if obj.canary is not None:
            out.append((name, f"canary {_pct(obj.canary.percent)}", f"{base}.canary.model", obj.canary.model))
        for i, entry in enumerate(obj.shadow):
            out.append((name, f"shadow {_pct(entry.percent)}", f"{base}.shadow[{i}].model", entry.model))
    return out
