"""The bench's request mix, pre-encoded: title-ranking over 20 titles and fraud-score, alternating (or one
reference model's requests, in a model-bound run).

Each request body is encoded once as a template with a fixed-width request id, so making
request ``n`` costs a bytes concatenation, not an ``orjson.dumps``: the load generator
shares the machine with the pipeline under test and must spend as little as it can.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from routing import partition_for
from schemas import headers as H
from workflows import sample_items

__all__ = ["RequestMix", "Template"]

_ID_MARK = "@@@@@@@@@@@@@@@@@@@@"  # replaced by the request id; the width of "<run8>-<n:011d>"
OBJECTIVES = ("title-ranking", "fraud-score")


class Template(NamedTuple):
    """One pre-encoded request body, split around its request id."""

    head: bytes
    tail: bytes
    key: bytes
    """The shard key (user id), as the client library keys requests; empty: keyed by the request id."""
    partition: int
    """The request-topic partition that key maps to (Kafka's default partitioner)."""
    headers: tuple[tuple[str, bytes], ...]
    """The contract's routing headers, less the request id."""


class RequestMix:
    """Makes request ``n`` of a run: its id, and the record to publish."""

    def __init__(self, run: str, reply_to: str, partitions: int, *, per_objective: int = 1000,
                 client: str = "demo", objectives: tuple[str, ...] = OBJECTIVES, form: str = "scoreline") -> None:
        """``form``: ``scoreline`` (the contract's request and headers) or ``v2`` (MLServer's Kafka input: a V2
        inference request of one ``BYTES`` row, the JSON of context and payload; the ``mlserver-model``
        header; keyed by the request id, which MLServer takes as the id and gives back as the reply's key)."""
        if form not in ("scoreline", "v2"):
            raise ValueError(f"unknown request form {form!r}; use scoreline or v2")
        self.run = run
        self.templates: list[Template] = []
        items = {o: sample_items(o, per_objective, seed=11) for o in objectives}
        for i in range(per_objective):
            for objective in objectives:
                item = items[objective][i]
                user = str(item.context["user_id"])
                if form == "v2":
                    row = orjson.dumps({"context": item.context, "payload": item.payload}).decode()
                    body = orjson.dumps({"id": _ID_MARK, "inputs": [
                        {"name": "request", "datatype": "BYTES", "shape": [1], "data": [row]}]})
                    head, tail = body.split(_ID_MARK.encode())
                    self.templates.append(Template(head, tail, b"", partition_for(user, partitions),
                                                   (("mlserver-model", objective.encode()),)))
                    continue
                body = orjson.dumps({"request_id": _ID_MARK, "objective": objective, "client": client,
                                     "reply_to": reply_to, "context": item.context, "payload": item.payload,
                                     "traffic": "live"})
                head, tail = body.split(_ID_MARK.encode())
                # As the client library sends them: the routing headers and the context fields rules match on.
                context_headers = tuple((header, str(item.context[field]).encode())
                                        for field, header in H.CONTEXT_HEADERS.items()
                                        if isinstance(item.context.get(field), str))
                headers = ((H.OBJECTIVE, objective.encode()), (H.CLIENT, client.encode()),
                           (H.REPLY_TO, reply_to.encode()), (H.TRAFFIC, b"live"), (H.SHARD_KEY, user.encode()),
                           *context_headers)
                self.templates.append(Template(head, tail, user.encode(), partition_for(user, partitions),
                                               headers))

    def request_id(self, n: int) -> bytes:
        """The id of request ``n``: unique within the run, as wide as the template's mark."""
        return f"{self.run}-{n:011d}".encode()

    def record(self, n: int) -> tuple[bytes, Template, bytes, list[tuple[str, bytes]]]:
        """Request ``n``: its id, its template, its body, its headers."""
        rid = self.request_id(n)
        t = self.templates[n % len(self.templates)]
        return rid, t, t.head + rid + t.tail, [(H.REQUEST_ID, rid), *t.headers]
