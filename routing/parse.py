"""Reading a rules document: every field checked, every problem reported with its path.

:func:`parse_rules` turns a JSON document into a frozen
:class:`~routing.rules.Rules` snapshot or raises :class:`RulesError` listing
every problem of the document at once; :func:`load_rules` does the same for a
file. Structural checks (types, unknown fields, references) happen here while
reading; the checks that need a whole objective at once are in
:mod:`routing.validate`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from routing.document import DocumentReader, kind_of
from routing.errors import RulesError
from routing.rules import (
    WILDCARD,
    Canary,
    Cell,
    ClientPolicy,
    Experiment,
    Objective,
    Rules,
    ShadowEntry,
    default_shadow_salt,
)
from routing.validate import check_layout

__all__ = ["load_rules", "parse_rules"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# No dots in client names: a client's own request topic is ``<prefix>requests.<client>``.
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RESERVED_CLIENT_NAMES = frozenset({"backfill"})
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._-]*")
_FIELD_PATH = re.compile(r"context(\.[A-Za-z0-9_-]+)+")


def load_rules(path: str | os.PathLike[str], *, version: int | None = None) -> Rules:
    """Read a JSON rules file and parse it with :func:`parse_rules`.

    Raises :class:`RulesError` for a document that is not JSON or not valid
    rules (``OSError`` passes through for a file that cannot be read).
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RulesError([f"{os.fspath(path)}: not valid JSON: {exc}"]) from exc
    return parse_rules(doc, version=version)


def parse_rules(doc: Mapping[str, Any], *, version: int | None = None) -> Rules:
    """Validate a rules document and return its frozen snapshot.

    ``version``, when given, stamps the snapshot (the publisher assigns the
    next version) and wins over the document's own ``version``; a document
    with neither is version 0, "not yet published".

    Raises :class:`RulesError` listing every problem, each naming its path.
    """
    return _Reader().read(doc, version)


class _Reader(DocumentReader):
    """Reads a rules document, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.shard_names: set[str] = set()
        self.model_names: set[str] = set()
        self.objective_names: set[str] = set()
        self.client_names: set[str] = set()
        self.experiment_ids: dict[str, str] = {}

    def read(self, doc: Any, version: int | None) -> Rules:
        top = self.fields(doc, "", ("shards", "models", "clients", "objectives"), ("version",))
        if top is None:
            raise RulesError(self.problems)
        if version is not None:
            self.version(version, "version (argument)")
            stamped = version
        elif "version" in top:
            stamped = self.version(top["version"], "version")
        else:
            stamped = 0

        shards = self.names(top.get("shards", {}), "shards", _NAME, "shard name")
        self.shard_names = set(shards)
        for name, body in shards.items():
            self.fields(body, f"shards.{name}", ())

        models_doc = self.names(top.get("models", {}), "models", _MODEL_ID, "model id (name@version)")
        self.model_names = set(models_doc)
        models: dict[str, str] = {}
        for name, body in models_doc.items():
            spec = self.fields(body, f"models.{name}", ("shard",))
            if spec is not None and "shard" in spec:
                shard = self.reference(spec["shard"], f"models.{name}.shard", self.shard_names, "shard")
                if shard is not None:
                    models[name] = shard

        objectives_doc = self.names(top.get("objectives", {}), "objectives", _NAME, "objective name")
        clients_doc = self.names(top.get("clients", {}), "clients", _CLIENT_NAME, "client name")
        for reserved in RESERVED_CLIENT_NAMES & set(clients_doc):
            self.problem(f"clients.{reserved}", f"{reserved!r} is reserved (it names the backfill request topic)")
        self.objective_names = set(objectives_doc)
        self.client_names = set(clients_doc)

        clients: dict[str, ClientPolicy] = {}
        for name, body in clients_doc.items():
            policy = self.client(name, body)
            if policy is not None:
                clients[name] = policy

        objectives: dict[str, Objective] = {}
        for name, body in objectives_doc.items():
            obj = self.objective(name, body)
            if obj is not None:
                objectives[name] = obj

        if self.problems:
            raise RulesError(self.problems)
        return Rules(
            version=stamped,
            shards=tuple(shards),
            models=MappingProxyType(models),
            clients=MappingProxyType(clients),
            objectives=MappingProxyType(objectives),
        )

    def version(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problem(path, f"expected a positive integer, got {value!r}")
            return 0
        return value

    def client(self, name: str, body: Any) -> ClientPolicy | None:
        path = f"clients.{name}"
        spec = self.fields(body, path, ("objectives", "reply_topics"), ("rate_limit_rps", "burst"))
        if spec is None or not {"objectives", "reply_topics"} <= spec.keys():
            return None
        limits = {}
        for key in ("rate_limit_rps", "burst"):
            if key in spec:
                value = spec[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                    self.problem(f"{path}.{key}", f"expected a positive number, got {value!r}")
                else:
                    limits[key] = float(value)
        if "burst" in limits and "rate_limit_rps" not in spec:
            self.problem(f"{path}.burst", "burst needs rate_limit_rps")
        objectives = self.strings(spec["objectives"], f"{path}.objectives")
        if objectives is not None and objectives != (WILDCARD,):
            for i, o in enumerate(objectives):
                if o == WILDCARD:
                    self.problem(f"{path}.objectives[{i}]", "'*' must be the only entry")
                elif o not in self.objective_names:
                    self.problem(f"{path}.objectives[{i}]", f"unknown objective {o!r}")
        topics = self.strings(spec["reply_topics"], f"{path}.reply_topics")
        for i, t in enumerate(topics or ()):
            if WILDCARD in t[:-1]:
                self.problem(f"{path}.reply_topics[{i}]", f"{t!r}: '*' may only end a prefix")
            elif t == WILDCARD:
                self.problem(f"{path}.reply_topics[{i}]", "a bare '*' would allow any topic; give a prefix")
        if objectives is None or topics is None:
            return None
        return ClientPolicy(name=name, objectives=objectives, reply_topics=topics, **limits)

    def objective(self, name: str, body: Any) -> Objective | None:
        path = f"objectives.{name}"
        before = len(self.problems)
        spec = self.fields(
            body,
            path,
            ("shard_key", "default"),
            ("salt", "experiments", "canary", "shadow", "override_clients"),
        )
        if spec is None:
            return None
        shard_key = spec.get("shard_key")
        if "shard_key" in spec:
            shard_key = self.string(shard_key, f"{path}.shard_key")
            if shard_key is not None and not _FIELD_PATH.fullmatch(shard_key):
                self.problem(
                    f"{path}.shard_key",
                    f"{shard_key!r} is not a context path (expected e.g. 'context.user_id')",
                )
        default = None
        if "default" in spec:
            default = self.reference(spec["default"], f"{path}.default", self.model_names, "model")
        salt = self.string(spec["salt"], f"{path}.salt") if "salt" in spec else name

        experiments = self.list_of(spec.get("experiments", []), f"{path}.experiments", self.experiment)
        canary = None
        if "canary" in spec:
            canary = self.canary(spec["canary"], f"{path}.canary")
        shadow = self.list_of(
            spec.get("shadow", []), f"{path}.shadow", lambda v, p: self.shadow_entry(name, v, p)
        )
        seen: dict[str, int] = {}
        for i, s in enumerate(shadow):
            if s.model in seen:
                self.problem(f"{path}.shadow[{i}].model", f"model {s.model!r} is already shadow[{seen[s.model]}]")
            seen.setdefault(s.model, i)
        override_clients: tuple[str, ...] = ()
        if "override_clients" in spec:
            raw = spec["override_clients"]
            if raw == []:
                override_clients = ()
            else:
                override_clients = self.strings(raw, f"{path}.override_clients") or ()
            for i, c in enumerate(override_clients):
                if c not in self.client_names:
                    self.problem(f"{path}.override_clients[{i}]", f"unknown client {c!r}")

        if len(self.problems) > before:
            return None
        self.problems.extend(check_layout(path, experiments, canary))
        if len(self.problems) > before:
            return None
        assert shard_key is not None and default is not None and salt is not None
        return Objective(
            name=name,
            shard_key=shard_key,
            default=default,
            salt=salt,
            experiments=tuple(experiments),
            canary=canary,
            shadow=tuple(shadow),
            override_clients=override_clients,
        )

    def experiment(self, value: Any, path: str) -> Experiment | None:
        before = len(self.problems)
        spec = self.fields(
            value,
            path,
            ("id", "allocation_percent", "cells"),
            ("salt", "offset_percent", "match", "compatible_with"),
        )
        if spec is None:
            return None
        exp_id = self.string(spec.get("id"), f"{path}.id", _NAME, "experiment id") if "id" in spec else None
        if exp_id is not None:
            if exp_id in self.experiment_ids:
                self.problem(f"{path}.id", f"duplicate experiment id {exp_id!r} (also {self.experiment_ids[exp_id]})")
            else:
                self.experiment_ids[exp_id] = path
        salt = self.string(spec["salt"], f"{path}.salt") if "salt" in spec else exp_id
        allocation = (
            self.percent(spec["allocation_percent"], f"{path}.allocation_percent")
            if "allocation_percent" in spec
            else None
        )
        offset = self.percent(spec["offset_percent"], f"{path}.offset_percent") if "offset_percent" in spec else 0
        match = self.match(spec.get("match", {}), f"{path}.match")
        cells = self.cells(spec.get("cells"), f"{path}.cells") if "cells" in spec else None
        compatible: tuple[str, ...] = ()
        if "compatible_with" in spec:
            compatible = self.strings(spec["compatible_with"], f"{path}.compatible_with") or ()
        if len(self.problems) > before:
            return None
        assert exp_id is not None and salt is not None and allocation is not None and cells and offset is not None
        return Experiment(
            id=exp_id,
            salt=salt,
            allocation_percent=allocation,
            offset_percent=offset,
            cells=cells,
            match=MappingProxyType(match),
            compatible_with=compatible,
        )

    def match(self, value: Any, path: str) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, Mapping):
            self.problem(path, f"expected an object, got {kind_of(value)}")
            return {}
        out = {}
        for key, values in value.items():
            if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
                self.problem(f"{path}.{key}", f"{key!r} is not a context field name or 'client'")
                continue
            accepted = self.strings(values, f"{path}.{key}")
            if accepted is not None:
                out[key] = accepted
        return out

    def cells(self, value: Any, path: str) -> tuple[Cell, ...] | None:
        if not isinstance(value, Mapping) or not value:
            self.problem(path, f"expected a non-empty object of cells, got {kind_of(value)}")
            return None
        out = []
        for name, body in value.items():
            cpath = f"{path}.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                self.problem(cpath, f"{name!r} is not a valid cell name")
                continue
            weight: Any = 1
            if isinstance(body, Mapping):
                spec = self.fields(body, cpath, ("model",), ("weight",))
                if spec is None or "model" not in spec:
                    continue
                model_value, weight = spec["model"], spec.get("weight", 1)
                mpath = f"{cpath}.model"
                if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                    self.problem(f"{cpath}.weight", f"expected a positive integer, got {weight!r}")
                    continue
            else:
                model_value, mpath = body, cpath
            model = self.reference(model_value, mpath, self.model_names, "model")
            if model is not None:
                out.append(Cell(name, model, weight))
        return tuple(out) if len(out) == len(value) else None

    def canary(self, value: Any, path: str) -> Canary | None:
        spec = self.fields(value, path, ("model", "percent"))
        if spec is None or "model" not in spec or "percent" not in spec:
            return None
        model = self.reference(spec["model"], f"{path}.model", self.model_names, "model")
        percent = self.percent(spec["percent"], f"{path}.percent")
        if model is None or percent is None:
            return None
        return Canary(model=model, percent=percent)

    def shadow_entry(self, objective: str, value: Any, path: str) -> ShadowEntry | None:
        spec = self.fields(value, path, ("model", "percent"), ("salt",))
        if spec is None or "model" not in spec or "percent" not in spec:
            return None
        model = self.reference(spec["model"], f"{path}.model", self.model_names, "model")
        percent = self.percent(spec["percent"], f"{path}.percent")
        salt = self.string(spec["salt"], f"{path}.salt") if "salt" in spec else None
        if model is None or percent is None or ("salt" in spec and salt is None):
            return None
        return ShadowEntry(model=model, percent=percent, salt=salt or default_shadow_salt(objective, model))

