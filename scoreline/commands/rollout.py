"""``scoreline rollout``: start, watch, pause, resume and abort guarded canary rollouts.

The commands write to the rollouts topic; the rollout controller (``scoreline run``, role
``rollout``) applies them and runs the steps. ``start`` / ``pause`` / ``resume`` / ``abort``
wait (``--wait``, default 30 s) until a controller has applied the command and print the
rollout as it then is. ``status`` and ``history`` only read.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from routing.rollout import DEFAULT_GUARDS, DEFAULT_STEPS, GUARD_SYNTAX, guard_text
from scoreline import settings
from scoreline.output import emit_json, progress
from streams.rollouts.client import RolloutClient
from streams.rollouts.records import FINISHED, Rollout, RolloutRefused, RolloutSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rollout", help="guarded canary rollouts that advance on evidence and roll "
                                                   "back by themselves")
    commands = parser.add_subparsers(dest="rollout_command", required=True)

    p = commands.add_parser("start", help="roll a candidate out to an objective in canary steps")
    _common(p, rules=True)
    p.add_argument("--objective", required=True)
    p.add_argument("--candidate", required=True, metavar="MODEL", help="name@version, placed on a shard")
    p.add_argument("--steps", default=",".join(f"{s:g}" for s in DEFAULT_STEPS),
                   help="canary percentages, increasing; the last, 100 (added if missing), makes the candidate the "
                        "default "
                        f"(default {','.join(f'{s:g}' for s in DEFAULT_STEPS)}); steps below the candidate's "
                        "current canary percentage are skipped")
    p.add_argument("--step-seconds", type=float, default=300.0,
                   help="the shortest a step runs before it is judged (default 300)")
    p.add_argument("--min-samples", type=int, default=500,
                   help="candidate results a step needs before it may advance (default 500)")
    p.add_argument("--max-samples", type=int, default=20_000,
                   help="candidate results after which a step the guards still cannot decide pauses "
                        "the rollout (default 20000)")
    p.add_argument("--guard", action="append", default=None, metavar="GUARD",
                   help=f"a guard ({GUARD_SYNTAX}; repeatable); default: "
                        f"{' and '.join(guard_text(g) for g in DEFAULT_GUARDS)}")
    p.add_argument("--follow", action="store_true", help="print each step until the rollout ends")
    p.set_defaults(func=run_start)

    for action, what in (("pause", "hold the rollout at its step (the canary stays)"),
                         ("resume", "carry on a paused rollout: its step starts again over the rules in force"),
                         ("abort", "end the rollout: the canary is taken away, every user back on the incumbent")):
        p = commands.add_parser(action, help=what)
        _common(p)
        p.add_argument("--objective", required=True)
        p.set_defaults(func=run_command, action=action)

    p = commands.add_parser("status", help="the rollouts in progress (or one objective's latest)")
    _common(p, wait=False)
    p.add_argument("--objective", default=None)
    p.add_argument("--follow", action="store_true", help="with --objective: print each change until it ends")
    p.set_defaults(func=run_status)

    p = commands.add_parser("history", help="every rollout kept on the topic, oldest first")
    _common(p, wait=False)
    p.add_argument("--objective", default=None)
    p.set_defaults(func=run_history)


def _common(parser: argparse.ArgumentParser, *, rules: bool = False, wait: bool = True) -> None:
    settings.add_connection_arguments(parser, rules=rules)
    if wait:
        parser.add_argument("--wait", type=float, default=30.0,
                            help="seconds to wait for the controller to apply the command (default 30)")
    parser.add_argument("--by", default=None, help="who asks (default user@host)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _client(args: argparse.Namespace) -> RolloutClient:
    return RolloutClient(settings.kafka_settings(args), settings.layout(args))


def run_start(args: argparse.Namespace) -> int:
    try:
        steps = tuple(float(s) for s in args.steps.split(",") if s.strip())
    except ValueError:
        raise RolloutRefused(f"--steps {args.steps!r}: comma-separated percentages, e.g. 5,25,50,100") from None
    guards = tuple(args.guard) if args.guard else tuple(guard_text(g) for g in DEFAULT_GUARDS)
    spec = RolloutSpec(args.objective, args.candidate, steps, args.step_seconds, args.min_samples,
                       args.max_samples, guards)
    if args.min_samples < 1 or args.max_samples < args.min_samples or args.step_seconds < 0:
        raise RolloutRefused("--min-samples at least 1, --max-samples at least --min-samples, --step-seconds >= 0")
    client = _client(args)
    return asyncio.run(_start(args, client, spec))


async def _start(args: argparse.Namespace, client: RolloutClient, spec: RolloutSpec) -> int:
    rules, plan = await client.check_start(spec, settings.load_example_rules(args))
    progress(f"rolling {spec.candidate} out to {spec.objective} (default {rules.objective(spec.objective).default}, "
             f"rules version {rules.version}): steps {', '.join(f'{s:g}%' for s in plan)}; "
             f"guards {', '.join(spec.guards)}")
    return await _send_and_report(args, client, "start", spec.objective, spec)


def run_command(args: argparse.Namespace) -> int:
    return asyncio.run(_command(args, _client(args)))


async def _command(args: argparse.Namespace, client: RolloutClient) -> int:
    current = (await client.read()).active(args.objective)
    if current is None:
        raise RolloutRefused(f"no rollout of {args.objective} is running or paused (`scoreline rollout history "
                             f"--objective {args.objective}` lists the finished ones)")
    return await _send_and_report(args, client, args.action, args.objective)


async def _send_and_report(args: argparse.Namespace, client: RolloutClient, action: str, objective: str,
                           spec: RolloutSpec | None = None) -> int:
    command = await client.send(action, objective, spec, by=args.by)
    applied, rollout = await client.wait_applied(command, args.wait)
    if not applied:
        log = await client.read()
        queued = command.id in log.commands
        why = (f"no rollout controller applied it within {args.wait:g} s: is `scoreline run` (role rollout) "
               "running on this cluster and prefix? It stays queued and is applied when one starts"
               if queued else "the controller refused it (its log says why); the rollout is as shown")
        progress(f"{action} {objective}: {why}")
        if args.json:
            emit_json({"command_applied": False, "queued": queued, "command": command.to_json(),
                       "rollout": rollout.to_json() if rollout else None})
        return 0 if queued else 1
    assert rollout is not None
    if getattr(args, "follow", False):
        rollout = await _follow(client, rollout.objective, rollout.id)
    if args.json:
        emit_json({"command_applied": True, "command": command.to_json(), **rollout.to_json()})
    else:
        print(describe(rollout))
    return 0


async def _follow(client: RolloutClient, objective: str, rollout_id: str) -> Rollout:
    """Print each change of the rollout (on stderr) until it ends; return how it ended."""
    seen = ""
    while True:
        log = await client.read()
        rollout = log.current.get(objective)
        if rollout is None or rollout.id != rollout_id:
            rollout = next(r for r in log.history(objective) if r.id == rollout_id)
        line = _step_line(rollout)
        if line != seen:
            progress(line)
            seen = line
        if rollout.state in FINISHED:
            return rollout
        await asyncio.sleep(2.0)


def run_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args, _client(args)))


async def _status(args: argparse.Namespace, client: RolloutClient) -> int:
    log = await client.read()
    if args.objective is None:
        rollouts = sorted(log.current.values(), key=lambda r: r.objective)
        if args.json:
            emit_json({"topic": client.topic, "rollouts": [r.to_json() for r in rollouts]})
        else:
            print("\n".join(describe(r) for r in rollouts) if rollouts else f"no rollouts on {client.topic}")
        return 0
    rollout = log.current.get(args.objective)
    if rollout is None:
        raise RolloutRefused(f"no rollout of {args.objective} on {client.topic}")
    if args.follow:
        rollout = await _follow(client, args.objective, rollout.id)
    if args.json:
        emit_json({"topic": client.topic, **rollout.to_json()})
    else:
        print(describe(rollout, steps=True))
    return 0


def run_history(args: argparse.Namespace) -> int:
    client = _client(args)
    rollouts = asyncio.run(client.read()).history(args.objective)
    if args.json:
        emit_json({"topic": client.topic, "rollouts": [r.to_json() for r in rollouts]})
    else:
        print("\n".join(describe(r) for r in rollouts) if rollouts else f"no rollouts on {client.topic}")
    return 0


def describe(rollout: Rollout, *, steps: bool = False) -> str:
    """A rollout in a few lines, for people."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rollout.started_ms / 1000))
    lines = [f"{rollout.objective}: {rollout.candidate} over {rollout.incumbent}, {rollout.state} at "
             f"{rollout.percent:g}% (rollout {rollout.id}, started {started} UTC by {rollout.started_by})"]
    if rollout.reason:
        lines.append(f"  {rollout.reason}")
    for i, step in enumerate(rollout.steps if steps else [rollout.current]):
        lines.append("  " + _step(step, current=i == rollout.step or not steps))
    return "\n".join(lines)


def _step(step: Any, *, current: bool) -> str:
    if step.rules_version is None and step.decision is None:
        return f"{'>' if current else ' '} {step.percent:g}%: not yet published"
    version = f"v{step.rules_version}" if step.rules_version is not None else "not published"
    cand = step.evidence.get("candidate", {}) if step.evidence else {}
    inc = step.evidence.get("incumbent", {}) if step.evidence else {}
    evidence = (f"; candidate {cand.get('results', 0)} results ({cand.get('errors', 0)} failed), incumbent "
                f"{inc.get('results', 0)} ({inc.get('errors', 0)} failed)") if step.evidence else ""
    verdicts = "; ".join(f"{j['guard']} {j['verdict']}" for j in step.judgements)
    return (f"{'>' if current else ' '} {step.percent:g}% ({version}): {step.decision or 'running'}{evidence}"
            + (f"; {verdicts}" if verdicts else ""))


def _step_line(rollout: Rollout) -> str:
    line = f"{rollout.objective} {rollout.state} at {rollout.percent:g}%: " + _step(rollout.current, current=True)
    return line + (f"\n  {rollout.reason}" if rollout.state != "running" and rollout.reason else "")
