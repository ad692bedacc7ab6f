"""``scoreline rules``: validate, publish, show, roll back, explain and simulate routing rules.

``validate``, and ``explain`` / ``simulate`` given ``--rules FILE``, need no broker.
``explain``, ``simulate`` and ``show`` otherwise use the rules in force on the cluster (the
latest valid version on the rules topic), else the shipped ``scoreline/examples/rules.json``; to stay
cheap, ``explain`` and ``simulate`` never start the local broker to find out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from routing import RequestView, Rules, RulesError, explain, extract_shard_key, load_rules, parse_rules, simulate
from scoreline import settings
from scoreline.output import emit_json, progress
from streams.broker.local import LocalBroker
from streams.errors import KafkaUnavailable
from streams.rules.publisher import RulesLog, RulesPublisher
from streams.transport.settings import KafkaSettings

EXAMPLE_RULES = settings.EXAMPLES_DIR / "rules.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rules", help="routing rules lifecycle: validate, publish, show, rollback, "
                                                 "explain, simulate")
    commands = parser.add_subparsers(dest="rules_command", required=True)

    p = commands.add_parser("validate", help="check a rules file; every problem names its path (no broker needed)")
    p.add_argument("file", help="the rules file (JSON)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_validate)

    p = commands.add_parser("publish", help="validate a rules file and publish it as the next version")
    p.add_argument("file", help="the rules file (JSON); its own version field is replaced by the next version")
    p.add_argument("--if-version", type=int, default=None, metavar="N",
                   help="publish only if version N is still the latest (0: only if none was published), else "
                        "refuse with rules_conflict: a publish based on version N never overwrites a newer one")
    _publishing_arguments(p)
    p.set_defaults(func=run_publish)

    p = commands.add_parser("show", help="the rules in force on the cluster (or one version) and the history")
    settings.add_connection_arguments(p, rules=False)
    p.add_argument("--version", type=int, default=None, help="show this published version instead of the latest")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_show)

    p = commands.add_parser("rollback", help="publish an earlier version's document again, as a new version")
    p.add_argument("--to", type=int, required=True, metavar="N", help="the version whose document to republish")
    _publishing_arguments(p)
    p.set_defaults(func=run_rollback)

    p = commands.add_parser("explain", help="how one request would be routed, step by step")
    settings.add_connection_arguments(p)
    p.add_argument("--objective", required=True)
    p.add_argument("--context", default="{}", help="the request context as JSON")
    p.add_argument("--client", default=None, help="the calling client (default: the first allowed the objective)")
    p.add_argument("--model", default=None, help="a model override")
    p.add_argument("--reply-to", default=None, help="default: the client's first reply topic")
    p.add_argument("--request-id", default="explain", help="shadow sampling is keyed by it (default 'explain')")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_explain)

    p = commands.add_parser("simulate", help="route synthetic users and compare model shares with the rules")
    settings.add_connection_arguments(p)
    p.add_argument("--objective", required=True)
    p.add_argument("--users", type=int, default=100_000, help="synthetic users u-0 .. u-{N-1} (default 100000)")
    p.add_argument("--context", default=None, help="context of every request as JSON (default: the one matching "
                                                   "the most experiments)")
    p.add_argument("--client", default=None, help="the calling client (default: picked from the rules)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_simulate)


def _publishing_arguments(parser: argparse.ArgumentParser) -> None:
    settings.add_connection_arguments(parser, rules=False)
    parser.add_argument("--by", default=None, help="who publishes (default user@host)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to read the rules topic to its end")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# ---------------------------------------------------------------- validate


def run_validate(args: argparse.Namespace) -> int:
    try:
        rules = load_rules(args.file)
    except OSError as exc:
        print(f"scoreline rules validate: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except RulesError as exc:
        if args.json:
            emit_json({"file": args.file, "valid": False, "problems": list(exc.problems)})
        print(f"{args.file}: {exc.message}", file=sys.stderr)
        return 1
    summary = {"file": args.file, "valid": True, "problems": [], "version": rules.version or None,
               "shards": list(rules.shards), "models": list(rules.models), "clients": list(rules.clients),
               "objectives": list(rules.objectives)}
    if args.json:
        emit_json(summary)
    else:
        print(f"{args.file}: valid ({len(rules.objectives)} objectives, {len(rules.models)} models, "
              f"{len(rules.shards)} shards, {len(rules.clients)} clients)")
    return 0


# ---------------------------------------------------------------- publish / rollback / show


def _read_document(path: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise RulesError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except orjson.JSONDecodeError as exc:
        raise RulesError([f"{path}: not valid JSON: {exc}"]) from None
    parse_rules(doc)  # before connecting: a bad file fails the same with or without a broker
    return doc


def run_publish(args: argparse.Namespace) -> int:
    doc = _read_document(args.file)
    publisher = RulesPublisher(settings.kafka_settings(args), settings.layout(args), published_by=args.by,
                               timeout=args.timeout)
    published = asyncio.run(publisher.publish_version(doc, if_version=args.if_version))
    return _report_published(args, publisher, published, f"published {args.file}")


def run_rollback(args: argparse.Namespace) -> int:
    publisher = RulesPublisher(settings.kafka_settings(args), settings.layout(args), published_by=args.by,
                               timeout=args.timeout)
    published = asyncio.run(publisher.rollback_version(args.to))
    return _report_published(args, publisher, published, f"rolled back to version {args.to}'s document",
                             rolled_back_to=args.to)


def _report_published(args: argparse.Namespace, publisher: RulesPublisher, published, what: str,
                      **extra: Any) -> int:
    summary = {"topic": publisher.topic, **published.record.summary(),
               "previous_version": published.previous_version, **extra}
    if args.json:
        emit_json(summary)
    else:
        print(f"{what} as rules version {published.record.version} on {publisher.topic} "
              f"(previous: {published.previous_version or 'none'})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    publisher = RulesPublisher(settings.kafka_settings(args), settings.layout(args))
    topic_log: RulesLog = asyncio.run(publisher.read())
    history = [r.summary() for r in topic_log.history()]
    if args.version is not None:
        record = topic_log.get(args.version)
        out = {"topic": topic_log.topic, "source": "topic", "latest": False, **record.to_json()}
        out["latest"] = topic_log.latest is not None and topic_log.latest.version == record.version
    elif topic_log.latest is not None:
        out = {"topic": topic_log.topic, "source": "topic", "latest": True, **topic_log.latest.to_json()}
    else:
        doc = orjson.loads(EXAMPLE_RULES.read_bytes())
        out = {"topic": topic_log.topic, "source": f"file {_shown(EXAMPLE_RULES)} (nothing published yet)",
               "latest": False, "version": None, "published_at_ms": None, "published_by": None, "rules": doc}
    out["history"] = history
    if topic_log.skipped:
        out["skipped_records"] = list(topic_log.skipped)
    if args.json:
        emit_json(out)
    else:
        print(f"rules version {out['version']} from {out['source']}"
              + (f", published by {out['published_by']}" if out["published_by"] else ""))
        print(orjson.dumps(out["rules"], option=orjson.OPT_INDENT_2).decode())
        print("history: " + (", ".join(f"v{h['version']} by {h['published_by']}" for h in history) or "empty"))
    return 0


# ---------------------------------------------------------------- explain / simulate


def _json_object(text: str, name: str) -> dict:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"scoreline rules: --{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"scoreline rules: --{name} must be a JSON object")
    return value


def rules_for_tools(args: argparse.Namespace) -> tuple[Rules, str]:
    """The rules ``explain`` / ``simulate`` use, and where they came from.

    ``--rules FILE`` (or ``SCORELINE_RULES``); else the newest valid version on the
    cluster's rules topic, when a cluster is named or the local broker runs; else the
    shipped example.
    """
    if args.rules:
        return load_rules(args.rules), f"file {args.rules}"
    bootstrap = args.bootstrap or os.environ.get("SCORELINE_BOOTSTRAP")
    if not bootstrap:
        status = LocalBroker().status()
        bootstrap = status.bootstrap if status.running else None
    if bootstrap:
        publisher = RulesPublisher(KafkaSettings.from_env(bootstrap), settings.layout(args), timeout=10.0)
        try:
            topic_log = asyncio.run(publisher.read())
        except KafkaUnavailable as exc:
            progress(f"scoreline rules: {exc}; using the shipped example rules")
        else:
            for record in ([topic_log.latest] if topic_log.latest else []) + topic_log.history()[::-1]:
                try:
                    return record.rules(), f"topic {topic_log.topic}"
                except RulesError:
                    progress(f"scoreline rules: version {record.version} on {topic_log.topic} is invalid; skipped")
    return load_rules(EXAMPLE_RULES), f"file {_shown(EXAMPLE_RULES)}"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _first_client(rules: Rules, objective: str) -> str:
    allowed = [c.name for c in rules.clients.values() if c.allows_objective(objective)]
    return allowed[0] if allowed else next(iter(rules.clients), "demo")


def run_explain(args: argparse.Namespace) -> int:
    context = _json_object(args.context, "context")
    rules, source = rules_for_tools(args)
    progress(f"rules: version {rules.version} from {source}")
    client = args.client or _first_client(rules, args.objective)
    policy = rules.clients.get(client)
    reply_to = args.reply_to or (policy.reply_topics[0].removesuffix("*") if policy else "")
    objective = rules.objectives.get(args.objective)
    shard_key = extract_shard_key(context, objective.shard_key) if objective is not None else None
    view = RequestView(request_id=args.request_id, objective=args.objective, client=client, reply_to=reply_to,
                       shard_key=shard_key, context=context, model=args.model)
    out = explain(view, rules)
    if args.json:
        emit_json(out)
    elif out["error"] is not None:
        print(f"rejected: {out['error']['code']}: {out['error']['message']} (rules version {rules.version})")
    else:
        d = out["decision"]
        print(f"{args.objective} for shard key {shard_key!r} (client {client}): {d['model']} on shard {d['shard']} "
              f"[{d['reason']}{', cell ' + d['cell'] if d['cell'] else ''}], allocation bucket "
              f"{out['allocation']['bucket']}, shadows: {', '.join(d['shadows']) or 'none'}; "
              f"rules version {rules.version}")
    return 1 if out["error"] is not None else 0


def run_simulate(args: argparse.Namespace) -> int:
    if args.users < 1:
        raise SystemExit("scoreline rules simulate: --users must be at least 1")
    context = _json_object(args.context, "context") if args.context is not None else None
    rules, source = rules_for_tools(args)
    progress(f"rules: version {rules.version} from {source}; routing {args.users} users ...")
    out = simulate(rules, args.objective, args.users, context=context, client=args.client)
    if args.json:
        emit_json(out)
    else:
        print(f"{out['objective']}: {out['users']} users, client {out['client']}, context "
              f"{orjson.dumps(out['context']).decode()}, rules version {out['rules_version']}")
        for kind in ("models", "shadow"):
            for model, share in out[kind].items():
                print(f"  {kind[:-1] if kind == 'models' else 'shadow'} {model}: observed {share['observed']:.2%}, "
                      f"expected {share['expected']:.2%}")
    return 0
