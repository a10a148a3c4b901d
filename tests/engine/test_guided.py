"""Constrained decoding in the copy: grammars compiled and cached, masks in the batched sampler,
every constrained output valid even from a random-weight model, bad constraints answered 400."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from outcrop.engine.engine import EngineRequest
from outcrop.engine.guided import (
    MAX_CONSTRAINT_BYTES,
    Constraint,
    GrammarCompiler,
    closing_reserve,
    locate_in_schema,
    strict_objects,
)
from outcrop.engine.protocol import ChatCompletionRequest
from outcrop.engine.requests import output_constraint
from outcrop.engine.sampling import SamplingParams
from outcrop.engine.server import create_app
from outcrop.errors import InvalidRequestError
from tests.engine.conftest import make_runtime, run_engine, tokens_of

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "tags": {"type": "array", "items": {"type": "string"}},
        "detail": {"type": "object", "properties": {"wind": {"type": "boolean"}}, "required": ["wind"]},
    },
    "required": ["city", "unit", "days", "detail"],
}


@pytest.fixture(scope="module")
def client(tiny_models: dict[str, Path]) -> Iterator[TestClient]:
    runtime = make_runtime(tiny_models["qwen2"], max_batch=16, max_model_len=512, served_name="tiny")
    with TestClient(create_app(runtime)) as c:
        yield c


def _chat(client: TestClient, **body: Any) -> Any:
    return client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Weather in Paris?"}], **body}
    )


def _sse(text: str) -> list[Any]:
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}}


# ---------------------------------------------------------------- unit


def test_strict_objects_forbids_extra_properties_only_where_the_schema_is_silent() -> None:
    schema = {
        "type": "object",
        "properties": {"properties": {"type": "object", "properties": {"a": {}}}},
        "additionalProperties": True,
    }
    strict = strict_objects(schema)
    assert strict["additionalProperties"] is True
    assert strict["properties"]["properties"]["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["properties"]["properties"]["a"]


def test_closing_reserve_is_a_quarter_of_the_budget_within_bounds() -> None:
    assert closing_reserve(16) == 8
    assert closing_reserve(200) == 50
    assert closing_reserve(4000) == 64


def test_error_location_names_the_offending_part_of_the_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"not": {}}}}}}
    assert locate_in_schema(schema, 'Unimplemented keys: ["not"]') == "#/properties/a/properties/b/not"


def test_compiler_caches_per_constraint(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models["qwen2"]))
    compiler = GrammarCompiler(tok, len(tok))
    first = compiler.compile(Constraint("json", json.dumps(WEATHER)))
    again = compiler.compile(Constraint("json", json.dumps(WEATHER)))
    assert not first.cached and first.compile_seconds > 0
    assert again.cached and again.grammar == first.grammar


def test_only_one_output_constraint_per_request() -> None:
    body = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "x"}], "guided_regex": "a+", "guided_choice": ["a"]}
    )
    with pytest.raises(InvalidRequestError, match="2 output constraints"):
        output_constraint(body)
    body = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "x"}], "structured_outputs": {"choice": ["a", "b"]}}
    )
    assert output_constraint(body) == Constraint("choice", '["a", "b"]', "structured_outputs.choice")


def test_engine_masks_only_the_constrained_rows_of_a_batch(tiny_models: dict[str, Path]) -> None:
    runtime = make_runtime(tiny_models["qwen2"], max_batch=8, max_model_len=512)
    assert runtime.engine is not None and runtime.grammars is not None
    grammar = runtime.grammars.compile(Constraint("regex", "[0-9]{3}-[a-z]{2}")).grammar
    plain = SamplingParams(max_tokens=12, temperature=1.0, seed=3, ignore_eos=True)
    alone = run_engine(runtime.engine, [EngineRequest("alone", [5, 6, 7], plain)])
    requests = [EngineRequest("plain", [5, 6, 7], plain)]
    requests += [
        EngineRequest(f"c{i}", [5, 6, 7 + i], SamplingParams(max_tokens=40, temperature=1.0, grammar=grammar))
        for i in range(4)
    ]
    outs = run_engine(runtime.engine, requests)
    # the unconstrained row samples exactly as it does alone (same seed)
    assert tokens_of(outs["plain"]) == tokens_of(alone["alone"])
    for i in range(4):
        text = "".join(o.text for o in outs[f"c{i}"])
        assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", text), text
        assert outs[f"c{i}"][-1].finish_reason == "stop"


# ---------------------------------------------------------------- HTTP, in process


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_output_always_validates(client: TestClient, temperature: float) -> None:
    for seed in range(3):
        r = _chat(
            client,
            response_format=_schema_format(WEATHER),
            max_tokens=120,
            temperature=temperature,
            seed=seed,
        )
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        jsonschema.validate(json.loads(choice["message"]["content"]), WEATHER)
        assert choice["finish_reason"] == "stop"


def test_a_short_budget_still_closes_the_json(client: TestClient) -> None:
    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
    r = _chat(client, response_format=_schema_format(schema), max_tokens=12, temperature=0)
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), schema)


def test_streamed_json_schema_output_validates(client: TestClient) -> None:
    r = _chat(client, response_format=_schema_format(WEATHER), max_tokens=120, temperature=0.8, stream=True)
    chunks = _sse(r.text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    jsonschema.validate(json.loads(text), WEATHER)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_json_object_regex_choice_and_grammar(client: TestClient) -> None:
    body = _chat(client, response_format={"type": "json_object"}, max_tokens=60).json()
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)
    r = client.post(
        "/v1/completions", json={"prompt": "x", "max_tokens": 20, "guided_regex": r"\d{3}-[a-z]{2}"}
    )
    assert re.fullmatch(r"\d{3}-[a-z]{2}", r.json()["choices"][0]["text"])
    r = client.post("/v1/completions", json={"prompt": "x", "guided_choice": ["yes", "no", "maybe"]})
    assert r.json()["choices"][0]["text"] in ("yes", "no", "maybe")
    r = _chat(client, structured_outputs={"grammar": 'start: "a" | "bb"'})
    assert r.json()["choices"][0]["message"]["content"] in ("a", "bb")
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 80, "guided_json": WEATHER})
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), WEATHER)


def test_constrained_requests_and_compile_time_are_metered(client: TestClient) -> None:
    _chat(client, guided_choice=["a", "b"])
    _chat(client, guided_choice=["a", "b"])
    text = client.get("/metrics").text
    assert re.search(r'outcrop_engine_constrained_requests_total\{kind="choice"\} [1-9]', text)
    assert re.search(r"outcrop_engine_grammar_compile_seconds_count [1-9]", text)
    assert re.search(r"outcrop_engine_grammar_cache_hits_total [1-9]", text)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"guided_json": {"type": "object", "properties": {"a": {"type": "strnig"}}}}, "#/properties/a/type"),
        ({"guided_json": {"type": "object", "properties": {"a": {"not": {}}}}}, "#/properties/a/not"),
        ({"response_format": _schema_format({"$ref": "#/$defs/missing"})}, "missing"),
        ({"response_format": {"type": "yaml"}}, "response_format.type 'yaml'"),
        ({"response_format": {"type": "json_schema", "json_schema": "x"}}, "must be an object"),
        ({"guided_regex": "a(b"}, "regular expression"),
        ({"guided_choice": []}, "non-empty strings"),
        ({"guided_json": "{not json"}, "not valid JSON"),
        ({"structured_outputs": {"xml": "<a/>"}}, "Unknown key 'xml'"),
        ({"guided_json": {"x": "y" * MAX_CONSTRAINT_BYTES}}, "at most 65536 bytes"),
    ],
)
def test_bad_constraints_are_a_clear_400(client: TestClient, body: dict[str, Any], needle: str) -> None:
    r = _chat(client, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and needle in error["message"], error


def test_constrained_sequences_survive_preemption_with_the_same_valid_output(
    tiny_models: dict[str, Path],
) -> None:
    # 9 blocks of 16 tokens; three sequences of ~75 tokens need 15: decoding must preempt and recompute.
    runtime = make_runtime(tiny_models["qwen2"], max_batch=4, kv_cache_bytes=10 * 16 * 512)
    engine = runtime.engine
    assert engine is not None and runtime.grammars is not None and engine.blocks.num_blocks == 9
    schema = {
        "type": "object",
        "properties": {"note": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["note", "n"],
    }
    grammar = runtime.grammars.compile(Constraint("json", json.dumps(schema))).grammar
    params = SamplingParams(max_tokens=64, temperature=0.0, grammar=grammar)
    prompts = [[5 + i, 6, 7, 8, 9, 10, 11] for i in range(3)]
    alone = [
        tokens_of(run_engine(engine, [EngineRequest(f"a{i}", p, params)])[f"a{i}"])
        for i, p in enumerate(prompts)
    ]
    before = runtime.metrics.preemptions._value.get()
    together = run_engine(engine, [EngineRequest(f"t{i}", p, params) for i, p in enumerate(prompts)])
    assert runtime.metrics.preemptions._value.get() > before
    for i in range(3):
        assert tokens_of(together[f"t{i}"]) == alone[i]
        jsonschema.validate(json.loads("".join(o.text for o in together[f"t{i}"])), schema)
    assert engine.blocks.num_free == engine.blocks.num_blocks


def test_each_choice_of_n_and_each_streamed_completion_follows_the_constraint(client: TestClient) -> None:
    body = _chat(client, response_format=_schema_format(WEATHER), max_tokens=120, n=3, temperature=1.0).json()
    assert len(body["choices"]) == 3
    for choice in body["choices"]:
        jsonschema.validate(json.loads(choice["message"]["content"]), WEATHER)
    r = client.post(
        "/v1/completions",
        json={"prompt": "x", "max_tokens": 20, "guided_regex": r"[a-z]{4}-\d{4}", "stream": True, "n": 2},
    )
    texts = ["", ""]
    for chunk in _sse(r.text):
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["text"]
    assert all(re.fullmatch(r"[a-z]{4}-\d{4}", t) for t in texts), texts
