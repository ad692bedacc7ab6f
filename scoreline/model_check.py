"""``scoreline models validate``: load a package as a worker would, score its examples, time a batch.

The report says whether the package serves, and if not, why (the same ``model_unavailable``
message a worker would log); what its example requests scored; what one batch costs; and how
much memory loading it took (the process's resident set before and after, which counts what
native runtimes such as onnxruntime allocate too).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from schemas.errors import ErrorCode, ScorelineError
from workflows import InMemoryFactStore, Item, build_model, package_sha256, sample_items
from workflows.packaging import EXAMPLES_FILE, load_examples

__all__ = ["check_package"]

_SAMPLED = ("title-ranking", "fraud-score")  # objectives whose requests workflows.sample_items can generate


def _rss_bytes() -> int | None:
    """This process's resident set size (Linux), or None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def check_package(directory: Path, facts_dir: Path, *, batch: int = 100, repeat: int = 5) -> dict[str, Any]:
    """Validate the package in ``directory``; return the report (``valid``, ``summary``, ``notes``, figures)."""
    report: dict[str, Any] = {"path": str(directory), "valid": False, "id": None, "sha256": None, "examples": 0,
                              "outcomes": {}, "batch": batch, "us_per_batch": None, "us_per_request": None,
                              "load_ms": None, "memory_mib": None, "problems": [], "notes": []}
    if not directory.is_dir():
        report["problems"].append(f"{directory}: not a directory")
        report["summary"] = f"{directory}: INVALID: not a directory"
        return report
    facts = InMemoryFactStore.from_dir(facts_dir) if facts_dir.is_dir() else InMemoryFactStore()
    before, began = _rss_bytes(), time.perf_counter()
    try:
        model = build_model(directory, facts)
        examples = load_examples(directory)
    except ScorelineError as exc:
        report["problems"].append(str(exc))
        report["summary"] = f"{directory.name}: INVALID [{exc.code}]: {exc}"
        return report
    report["load_ms"] = round((time.perf_counter() - began) * 1000, 1)
    after = _rss_bytes()
    if before is not None and after is not None:
        report["memory_mib"] = round(max(0, after - before) / 2**20, 1)
    report["id"], report["sha256"] = model.id, model.sha256
    if not examples and model.objective in _SAMPLED:
        examples = [{"context": dict(i.context), "payload": dict(i.payload)}
                    for i in sample_items(model.objective, 20, seed=1, facts_dir=facts_dir)]
        report["notes"].append(f"no {EXAMPLES_FILE}: scored 20 generated {model.objective} requests instead")
    items = [Item(e["context"], e.get("payload", {})) for e in examples]
    report["examples"] = len(items)
    if not items:
        report["notes"].append(f"no {EXAMPLES_FILE}: nothing was scored; add example requests to check the workflow")
    outcomes = model.score_batch(items)
    for n, outcome in enumerate(outcomes, 1):
        code = "ok" if outcome.ok else outcome.error.code if outcome.error else "?"
        report["outcomes"][code] = report["outcomes"].get(code, 0) + 1
        if outcome.error is not None:
            line = f"example {n}: {outcome.error.code}: {outcome.error.message}"
            (report["problems"] if outcome.error.code == ErrorCode.WORKFLOW_ERROR else report["notes"]).append(line)
    if items and not report["problems"]:
        timed = (items * math.ceil(batch / len(items)))[:batch]
        best = min(_timed(model.score_batch, timed) for _ in range(repeat))
        report["us_per_batch"] = round(best * 1e6, 1)
        report["us_per_request"] = round(best * 1e6 / len(timed), 2)
    report["valid"] = not report["problems"]
    report["notes"][:0] = report["problems"]
    figures = (f"{report['us_per_request']} µs a request at {batch} a batch" if report["us_per_request"] is not None
               else "not timed")
    memory = f", +{report['memory_mib']} MiB resident" if report["memory_mib"] is not None else ""
    scored = ", ".join(f"{n} {code}" for code, n in sorted(report["outcomes"].items())) or "nothing"
    state = "valid" if report["valid"] else "INVALID"
    report["summary"] = (f"{model.id}: {state}; examples scored: {scored}; {figures}; loaded in "
                         f"{report['load_ms']} ms{memory}; sha256 {package_sha256(directory)[:12]}…")
    return report


def _timed(score: Any, items: list[Item]) -> float:
    began = time.perf_counter()
    score(items)
    return time.perf_counter() - began
