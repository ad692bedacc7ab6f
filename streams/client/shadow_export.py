"""``scoreline shadow export``: the comparison topic as a Parquet data set, written incrementally.

Layout, Hive-style, so DuckDB, Spark, pandas and Arrow read it with the partitions as columns::

    DIR/objective=title-ranking/date=2026-12-04/part-00000017-0.parquet
    DIR/_scoreline_export.json      where the export stopped (the commit point)

Columns of every part (``objective`` and ``date`` come from the path): ``request_id``,
``primary_model``, ``shadow_model``, ``matched``, ``reason``, ``rules_version``, ``cell``,
``primary_status``, ``shadow_status``, ``primary_latency_ms``, ``shadow_latency_ms``,
``latency_delta_ms`` (shadow minus primary), ``traffic``, ``ts`` (the comparison's time, UTC),
``context`` and ``agreement`` (JSON text, whole), and flattened beside them every scalar
context field as ``context_<field>`` and every scalar agreement measure as ``agreement_<name>``
(a column whose values mix types within a part is JSON text).

**Incremental, each pair once.** The state file holds, per partition of the topic, the next
offset to read, and the keys (request id, shadow model) of the last :data:`RECENT_KEYS` pairs
written. Each batch of at most :data:`BATCH` comparisons is written as parts under temporary
names; then the state, naming those parts, replaces the old one (the commit); then the parts are
renamed. A run that finds parts named by the state but not yet renamed renames them (the batch
was committed); any other temporary part is deleted (it was not). So a kill at any point neither
loses a pair nor writes one twice, and a re-run with nothing new on the topic writes nothing.
The comparator is at-least-once: a comparison it repeats (after a restart it replays what it had
not committed, minutes at most) is dropped when its key is among the recent ones.

Memory is flat: a batch at a time, plus the recent keys (8 bytes each).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from schemas import codec
from schemas.errors import ErrorCode, InvalidMessage
from schemas.messages import Comparison
from streams.client.progress import Progress
from streams.transport.settings import KafkaSettings
from streams.transport.topic_reader import TopicSpan

__all__ = ["BATCH", "RECENT_KEYS", "STATE_FILE", "export_comparisons", "read_export"]

STATE_FILE = "_scoreline_export.json"
"The export's commit point, in the export's directory."

BATCH = 50_000
"Comparisons written per commit."

RECENT_KEYS = 200_000
"Pairs remembered to drop the comparator's repeats (1.6 MB)."

_FIXED = ("request_id", "primary_model", "shadow_model", "matched", "reason", "rules_version", "cell",
          "primary_status", "shadow_status", "primary_latency_ms", "shadow_latency_ms", "latency_delta_ms",
          "traffic", "ts", "context", "agreement")


@dataclass
class _State:
    topic: str
    offsets: dict[int, int] = field(default_factory=dict)
    recent: list[int] = field(default_factory=list)
    committing: list[str] = field(default_factory=list)
    batches: int = 0
    exported: int = 0

    @classmethod
    def load(cls, path: Path, topic: str) -> _State:
        if not path.exists():
            return cls(topic)
        try:
            d = orjson.loads(path.read_bytes())
            recent = np.frombuffer(base64.b64decode(d["recent"]), dtype=np.int64).tolist()
            state = cls(d["topic"], {int(p): int(o) for p, o in d["offsets"].items()}, recent,
                        list(d["committing"]), int(d["batches"]), int(d["exported"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise InvalidMessage(ErrorCode.INVALID_VALUE, f"{path} is not a scoreline export's state; "
                                 "export to an empty directory or remove it", field="to") from None
        if state.topic != topic:
            raise InvalidMessage(ErrorCode.INVALID_VALUE, f"{path.parent} is an export of {state.topic}, not {topic}",
                                 field="to")
        return state

    def save(self, path: Path) -> None:
        body = {"topic": self.topic, "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
                "committing": self.committing, "batches": self.batches, "exported": self.exported,
                "recent": base64.b64encode(np.asarray(self.recent[-RECENT_KEYS:], dtype=np.int64).tobytes()).decode()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(body))
        os.replace(tmp, path)


async def export_comparisons(kafka: KafkaSettings, topic: str, to: Path,
                             progress: Callable[[str], None] = lambda _: None, *, tty: bool = False,
                             timeout: float = 60.0) -> dict[str, Any]:
    """Export what ``topic`` holds past the last export into ``to``; returns the run's summary
    ``{"read", "written", "repeats_dropped", "undecodable", "parts", "exported", "to", "offsets"}``."""
    pa, pq = _arrow()
    to.mkdir(parents=True, exist_ok=True)
    state_path = to / STATE_FILE
    state = _State.load(state_path, topic)
    _recover(to, state, state_path)
    recent = _Recent(state.recent)
    summary: dict[str, Any] = {"read": 0, "written": 0, "repeats_dropped": 0, "undecodable": 0, "parts": 0}
    async with TopicSpan(kafka, topic, from_offsets=state.offsets, timeout=timeout) as span:
        bar = Progress(span.total, progress, tty=tty, label="export", second="written")
        pending: list[Comparison] = []
        offsets = dict(span.start_offsets)

        def commit() -> None:
            summary["parts"] += _write_batch(pa, pq, to, state, state_path, pending, offsets, recent)
            summary["written"] += len(pending)
            pending.clear()

        async for records in span:
            for record in records:
                summary["read"] += 1
                offsets[record.partition] = record.offset + 1
                try:
                    comparison = codec.decode_comparison(record.value)
                except InvalidMessage:
                    summary["undecodable"] += 1
                    continue
                if not recent.add(_key(comparison)):
                    summary["repeats_dropped"] += 1
                    continue
                pending.append(comparison)
            if len(pending) >= BATCH:
                commit()
            bar.update(summary["read"], summary["written"] + len(pending))
        offsets.update({p: max(offsets.get(p, 0), o) for p, o in span.end_offsets.items()})
        commit()
        bar.finish(summary["read"], summary["written"])
    summary.update(exported=state.exported, to=str(to), offsets={str(p): o for p, o in sorted(state.offsets.items())})
    return summary


def read_export(directory: Path, *, objective: str | None = None, since_ms: int | None = None) -> Iterator[Comparison]:
    """The comparisons of an export, optionally of one objective and from a time, a batch at a time.

    Raises:
        InvalidMessage: ``directory`` holds no export (``field="from"``).
    """
    pa, _ = _arrow()
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    if not (directory / STATE_FILE).exists():
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"{directory} holds no shadow export "
                             f"(no {STATE_FILE}); write one with `scoreline shadow export --to DIR`", field="from")
    dataset = ds.dataset(directory, format="parquet", partitioning="hive",
                         exclude_invalid_files=False, ignore_prefixes=[".", "_"])
    condition = None
    if objective is not None:
        condition = pc.field("objective") == objective
    if since_ms is not None:
        moment = pc.field("ts") >= pa.scalar(since_ms, type=pa.timestamp("ms", tz="UTC"))
        condition = moment if condition is None else condition & moment
    wanted = [*(c for c in _FIXED), "objective"]
    for batch in dataset.to_batches(columns=wanted, filter=condition, batch_size=65_536):
        for row in batch.to_pylist():
            yield _comparison(row)


class _Recent:
    """The keys of the last :data:`RECENT_KEYS` pairs, oldest first."""

    def __init__(self, keys: list[int]) -> None:
        self._keys = dict.fromkeys(keys[-RECENT_KEYS:])

    def add(self, key: int) -> bool:
        """False for a key already among the recent ones."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > RECENT_KEYS:
            del self._keys[next(iter(self._keys))]
        return True

    def keys(self) -> list[int]:
        return list(self._keys)


def _key(c: Comparison) -> int:
    digest = hashlib.blake2b(f"{c.request_id}\0{c.shadow_model}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _recover(to: Path, state: _State, state_path: Path) -> None:
    """Finish a committed batch's renames; delete what an uncommitted one left."""
    committed = {to / name for name in state.committing}
    for part in committed:
        tmp = part.with_name(part.name + ".tmp")
        if tmp.exists():
            os.replace(tmp, part)
    for tmp in to.rglob("part-*.parquet.tmp"):
        tmp.unlink()
    if state.committing:
        state.committing = []
        state.save(state_path)


def _write_batch(pa: Any, pq: Any, to: Path, state: _State, state_path: Path, batch: list[Comparison],
                 offsets: dict[int, int], recent: _Recent) -> int:
    if not batch and offsets == state.offsets:
        return 0
    groups: dict[tuple[str, str], list[Comparison]] = defaultdict(list)
    for c in batch:
        groups[(c.objective, _date(c.ts_ms))].append(c)
    names = []
    for index, ((objective, date), items) in enumerate(sorted(groups.items())):
        folder = to / f"objective={urllib.parse.quote(objective, safe='')}" / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        name = folder / f"part-{state.batches:08d}-{index}.parquet"
        pq.write_table(_table(pa, items), name.with_name(name.name + ".tmp"))
        names.append(name)
    state.offsets = dict(offsets)
    state.recent = recent.keys()
    state.committing = [str(n.relative_to(to)) for n in names]
    state.batches += 1
    state.exported += len(batch)
    state.save(state_path)  # the commit
    for name in names:
        os.replace(name.with_name(name.name + ".tmp"), name)
    state.committing = []
    state.save(state_path)
    return len(names)


def _date(ts_ms: int) -> str:
    return datetime.datetime.fromtimestamp(ts_ms / 1000, tz=datetime.UTC).date().isoformat()


def _table(pa: Any, items: list[Comparison]) -> Any:
    def delta(c: Comparison) -> float | None:
        if c.primary_latency_ms is None or c.shadow_latency_ms is None:
            return None
        return c.shadow_latency_ms - c.primary_latency_ms
    columns: dict[str, Any] = {
        "request_id": pa.array([c.request_id for c in items], pa.string()),
        "primary_model": pa.array([c.primary_model for c in items], pa.string()),
        "shadow_model": pa.array([c.shadow_model for c in items], pa.string()),
        "matched": pa.array([c.matched for c in items], pa.bool_()),
        "reason": pa.array([c.reason for c in items], pa.string()),
        "rules_version": pa.array([c.rules_version for c in items], pa.int64()),
        "cell": pa.array([c.cell for c in items], pa.string()),
        "primary_status": pa.array([c.primary_status for c in items], pa.string()),
        "shadow_status": pa.array([c.shadow_status for c in items], pa.string()),
        "primary_latency_ms": pa.array([c.primary_latency_ms for c in items], pa.float64()),
        "shadow_latency_ms": pa.array([c.shadow_latency_ms for c in items], pa.float64()),
        "latency_delta_ms": pa.array([delta(c) for c in items], pa.float64()),
        "traffic": pa.array([c.traffic for c in items], pa.string()),
        "ts": pa.array([c.ts_ms for c in items], pa.timestamp("ms", tz="UTC")),
        "context": pa.array([orjson.dumps(c.context).decode() for c in items], pa.string()),
        "agreement": pa.array([orjson.dumps(c.agreement).decode() for c in items], pa.string()),
    }
    for prefix, dicts in (("context_", [c.context for c in items]), ("agreement_", [c.agreement for c in items])):
        for name in sorted({k for d in dicts for k, v in d.items() if _scalar(v)}):
            columns[prefix + name] = _flat_column(pa, [d.get(name) for d in dicts])
    return pa.table(columns)


def _scalar(value: Any) -> bool:
    return value is None or type(value) in (str, int, float, bool)


def _flat_column(pa: Any, values: list[Any]) -> Any:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {str}:
        return pa.array(values, pa.string())
    if kinds <= {bool}:
        return pa.array(values, pa.bool_())
    if kinds <= {int}:
        return pa.array(values, pa.int64())
    if kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else orjson.dumps(v).decode() for v in values], pa.string())


def _comparison(row: dict[str, Any]) -> Comparison:
    ts = row["ts"]
    return Comparison(
        request_id=row["request_id"], objective=row["objective"], primary_model=row["primary_model"],
        shadow_model=row["shadow_model"], matched=row["matched"], reason=row["reason"],
        rules_version=row["rules_version"], cell=row["cell"], primary_status=row["primary_status"],
        shadow_status=row["shadow_status"], primary_latency_ms=row["primary_latency_ms"],
        shadow_latency_ms=row["shadow_latency_ms"], agreement=orjson.loads(row["agreement"]),
        traffic=row["traffic"], context=orjson.loads(row["context"]),
        ts_ms=int(ts.timestamp() * 1000) if ts is not None else 0)


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, "shadow export needs pyarrow: pip install 'scoreline[data]'",
                             field="to") from None
    return pa, pq

