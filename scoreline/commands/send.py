"""``scoreline send``: publish one request, wait for its result, print it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

import orjson

from scoreline import settings
from scoreline.output import emit_json, progress
from streams.client.score_client import ScoreClient, ScoreTimeout
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.admin import router_running
from streams.transport.protocols import KafkaError
from streams.transport.settings import KafkaSettings
from streams.transport.topic_reader import read_topic


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("send", help="send one scoring request and print its result")
    settings.add_connection_arguments(parser)
    settings.add_config_arguments(parser)
    parser.add_argument("--objective", required=True, help="the objective to call, e.g. title-ranking")
    parser.add_argument("--context", default="{}", help="the request context as JSON")
    parser.add_argument("--payload", default="{}", help="the request payload as JSON")
    parser.add_argument("--client", default="demo", help="the calling client (default demo)")
    parser.add_argument("--model", default=None, help="a model override (only for clients allowed to)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the result")
    parser.add_argument("--json", action="store_true", help="print only the result JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_send(args))


async def _dead_letter_of(kafka: KafkaSettings, topic: str, request_id: str, *, since_ms: int) -> dict | None:
    """The dead letter of ``request_id`` on ``topic`` written since ``since_ms``, if there is one."""
    try:
        records = await read_topic(kafka, topic, since_ms=since_ms, timeout=5.0)
    except (LookupError, TimeoutError, KafkaError):
        return None
    for record in records:
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            letter = orjson.loads(record.value or b"")
            if isinstance(letter, dict) and letter.get("request_id") == request_id:
                return letter
    return None


def _json_arg(text: str, name: str) -> dict:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"scoreline send: --{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"scoreline send: --{name} must be a JSON object")
    return value


async def _send(args: argparse.Namespace) -> int:
    context, payload = _json_arg(args.context, "context"), _json_arg(args.payload, "payload")
    # The configuration first: a path that is wrong fails in one line before anything connects.
    rules = settings.load_example_rules(args)
    for check in (settings.models_dir, settings.facts_dir):  # loaded only if this command serves in-process
        check(args)
    kafka = settings.kafka_settings(args)
    layout = settings.layout(args)
    async with contextlib.AsyncExitStack() as stack:
        if not await router_running(kafka, layout):
            progress("no scoreline router is running on this cluster; serving this request in-process "
                     "(`scoreline run` keeps one running)")
            pipeline = await stack.enter_async_context(
                Pipeline(kafka, layout, rules, settings.model_registry(args),
                         PipelineOptions(model_cache=settings.model_cache_dir())))
            await pipeline.wait_ready()
        client = await stack.enter_async_context(ScoreClient(kafka, args.client, layout=layout))
        sent_ms = int(time.time() * 1000)
        try:
            result = await client.score(args.objective, context, payload, model=args.model, timeout=args.timeout)
        except ScoreTimeout as exc:
            letter = await _dead_letter_of(kafka, layout.deadletter, exc.request_id, since_ms=sent_ms - 1000)
            if letter is None:
                print(f"scoreline send: {exc}", file=sys.stderr)
            else:  # refused where no reply could go (e.g. a reply topic the rules do not allow): say why
                print(f"scoreline send: request {exc.request_id} was refused at the {letter.get('stage')} "
                      f"[{letter.get('code')}]: {letter.get('message')} (dead letter on {layout.deadletter})",
                      file=sys.stderr)
            return 1
    emit_json(result)
    return 0 if result.status == "ok" else 1
