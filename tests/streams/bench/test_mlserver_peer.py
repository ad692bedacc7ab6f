"""The bench's MLServer peer without a broker: what its load generator writes is what MLServer's Kafka
server reads, its settings are what MLServer parses, and its custom runtime scores as the worker does.
mlserver comes with the test extra (``scoreline[mlserver]``).

The peer on a real broker, end to end, is in ``test_bench.py`` (the model-bound bench).
"""

from __future__ import annotations

import orjson
import pytest
from mlserver.codecs import StringCodec
from mlserver.settings import ModelSettings, Settings
from mlserver.types import InferenceRequest

from streams.bench.mix import RequestMix
from streams.bench.mlserver_app import MODEL_HEADER, configure
from workflows import InMemoryFactStore, sample_items
from workflows.loading import build_model

MODEL = "scorer-mlp"


def test_a_v2_record_is_a_v2_inference_request_for_the_model_keyed_by_its_id():
    mix = RequestMix("abcdefgh", "replies", 4, per_objective=3, objectives=(MODEL,), form="v2")
    rid, template, body, headers = mix.record(1)

    request = InferenceRequest(**orjson.loads(body))  # as mlserver/kafka/handlers.py reads it
    assert request.id == rid.decode() and template.key == b""  # the load generator keys it by rid
    assert dict(headers)[MODEL_HEADER] == MODEL.encode()
    (row,) = StringCodec.decode_input(request.inputs[0])
    item = sample_items(MODEL, 3, seed=11)[1]
    assert orjson.loads(row) == {"context": item.context, "payload": item.payload}


def test_an_unknown_request_form_is_refused():
    with pytest.raises(ValueError, match="unknown request form"):
        RequestMix("abcdefgh", "replies", 4, form="protobuf")


def test_the_settings_written_are_the_ones_mlserver_reads(tmp_path, reference_dir):
    configure(tmp_path, "127.0.0.1:9092", "bench-x-mlserver.", MODEL, reference_dir / "models")

    settings = Settings.model_validate_json((tmp_path / "settings.json").read_text())
    assert settings.kafka_enabled and settings.kafka_topic_input == "bench-x-mlserver.requests"
    assert settings.kafka_topic_output == "bench-x-mlserver.replies.demo" and settings.parallel_workers >= 1
    model = ModelSettings.model_validate_json((tmp_path / MODEL / "model-settings.json").read_text())
    assert model.name == MODEL and model.max_batch_size > 1 and model.max_batch_time > 0
    assert model.parameters is not None and model.parameters.uri == str(reference_dir / "models" / f"{MODEL}@v1")


async def test_the_runtime_scores_a_merged_batch_row_for_row_as_the_worker_does(tmp_path, reference_dir):
    from streams.bench.mlserver_runtime import ScorelineRuntime

    configure(tmp_path, "127.0.0.1:9092", "p.", MODEL, reference_dir / "models")
    runtime = ScorelineRuntime(ModelSettings.model_validate_json((tmp_path / MODEL / "model-settings.json")
                                                                 .read_text()))
    assert await runtime.load()
    items = sample_items(MODEL, 3, seed=4)
    rows = [orjson.dumps({"context": i.context, "payload": i.payload}).decode() for i in items]
    request = InferenceRequest(id="r1", inputs=[StringCodec.encode_input("request", rows)])

    response = await runtime.predict(request)

    results = [orjson.loads(r) for r in StringCodec.decode_output(response.outputs[0])]
    expected = build_model(reference_dir / "models" / f"{MODEL}@v1", InMemoryFactStore()).score_batch(items)
    assert response.id == "r1" and results == [{"result": orjson.loads(orjson.dumps(o.value))} for o in expected]
