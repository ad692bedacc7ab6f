"""Helpers the stream tests share (a module of its own: ``conftest`` is not importable by name)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from routing import parse_rules
from scoreline.settings import EXAMPLES_DIR
from streams.topics import TopicLayout


def rules_under(layout: TopicLayout, name: str = "rules.json"):
    """A shipped rules file with its reply topics moved under the test's prefix."""
    text = (EXAMPLES_DIR / name).read_text().replace('"scoreline.replies.', f'"{layout.prefix}replies.')
    return parse_rules(orjson.loads(text))


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds (polled every 20 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def wait_for_log(log_file: Path, text: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Return once ``text`` is in ``log_file``; fail with the log's tail on timeout or if ``proc`` exited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while text not in log_file.read_text(errors="replace"):
        assert proc is None or proc.poll() is None, log_file.read_text(errors="replace")[-3000:]
        assert loop.time() < deadline, f"{text!r} not logged within {timeout}s:\n" \
                                       f"{log_file.read_text(errors='replace')[-3000:]}"
        await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_get(port: int, path: str) -> tuple[int, str]:
    """One GET against a local port: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def samples(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


def model_package(models: Path, model_id: str, objective: str, *, serving: dict | None = None,
                  code: str = "") -> Path:
    """A skeleton package (``workflows.skeleton``) with a manifest ``serving`` object, and ``code`` (dedented)
    appended to its ``workflow.py``: a subclass of the skeleton's class under the same name changes a stage."""
    import json
    import textwrap

    from workflows.skeleton import new_package

    package = new_package(models, model_id, objective)
    if serving:
        manifest = json.loads((package / "manifest.json").read_text())
        manifest["serving"] = serving
        (package / "manifest.json").write_text(json.dumps(manifest))
    if code:
        (package / "workflow.py").write_text((package / "workflow.py").read_text() + textwrap.dedent(code))
    return package
