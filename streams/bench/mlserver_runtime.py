"""The MLServer peer's custom runtime: a scoreline model package served by MLServer, unchanged.

MLServer has no runtime for a scoreline workflow, and its documented way to serve such a model is a
custom runtime: a subclass of ``mlserver.MLModel`` with ``load`` and ``predict``
(https://mlserver.readthedocs.io/en/stable/user-guide/custom.html). This one loads the package
the model settings point at (``parameters.uri``) with the same loader the scoreline worker uses,
and scores each request with the same ``score_batch``: the model does the same work under both.

Requests follow the V2 inference protocol MLServer speaks on Kafka as on REST and gRPC: one
input, ``request``, of datatype ``BYTES``, one element per request, each the JSON text of the
request's ``{"context": ..., "payload": ...}`` (what a scoreline request carries); the response
has one output, ``result``, the JSON text of each result (or ``{"error": ...}``), row for row.
Adaptive batching merges requests along that first axis, so ``predict`` sees a batch of rows
and ``score_batch`` scores them in one call, as the worker's batcher does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from workflows import InMemoryFactStore, Item
from workflows.loading import build_model

__all__ = ["ScorelineRuntime"]


class ScorelineRuntime(MLModel):
    """Serves the scoreline model package at ``parameters.uri``."""

    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise ValueError(f"model {self.name}: parameters.uri names no scoreline model package")
        self._model = build_model(Path(uri), InMemoryFactStore())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = StringCodec.decode_input(payload.inputs[0])
        items = []
        for row in rows:
            request = orjson.loads(row)
            items.append(Item(request["context"], request.get("payload")))
        outcomes = self._model.score_batch(items)
        results = [orjson.dumps({"result": o.value} if o.error is None else {"error": dataclasses.asdict(o.error)})
                   .decode() for o in outcomes]
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[StringCodec.encode_output("result", results)])
