"""Schemathesis against the in-process app's own OpenAPI: no request to the control plane
(imports, batch inference jobs, invocation logging), the admin API, the ops endpoints or the
OpenAI routes (/v1/models, /v1/completions, /v1/chat/completions) may end in a 500.

Every operation is fuzzed with schema-valid (positive) and schema-breaking (negative) data.
The create operations read their bodies by hand (for Bedrock-shaped validation errors), so their
OpenAPI entries have no request body; the test adds the wire models' JSON schemas to them, so the
fuzzer generates and mutates real CreateModelImportJob and CreateModelInvocationJob bodies, and
OpenAI completion and chat-completion bodies (the copy's own request models). Those carry random
model names, so they exercise the gateway's checks; the near-valid OpenAI test names the seeded
model, warmed once, so the bodies reach a model copy's validation as well. A
model imported and a batch job created before fuzzing are also used as path identifiers, so the
found-paths of get, stop and delete run too.

Schemathesis' pytest plugin (``from_fixture``) does not work with this pytest, so each
operation's hypothesis strategy is driven with ``@given`` directly.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel
from schemathesis.generation import GenerationMode

from outcrop.api.app import build_services, create_app
from outcrop.api.bedrock.batch import CreateModelInvocationJobRequest
from outcrop.api.bedrock.protocol import CreateModelImportJobRequest
from outcrop.batch.service import CreateBatchJob
from outcrop.engine.protocol import ChatCompletionRequest, CompletionRequest
from outcrop.envs import load_config
from outcrop.registry.importer import ImportWorker
from outcrop.registry.service import CreateImportJob, Registry
from tests.conftest import AUTH, TEST_ACCESS_KEY_ID, TEST_API_KEY, TEST_SECRET_ACCESS_KEY

CREATE_PATH = "/model-import-jobs"
BATCH_CREATE_PATH = "/model-invocation-job"
COMPLETIONS_PATH = "/v1/completions"
CHAT_PATH = "/v1/chat/completions"
HAND_READ_BODIES: dict[str, type[BaseModel]] = {
    CREATE_PATH: CreateModelImportJobRequest,
    BATCH_CREATE_PATH: CreateModelInvocationJobRequest,
    COMPLETIONS_PATH: CompletionRequest,
    CHAT_PATH: ChatCompletionRequest,
}
SEEDED_MODEL = "seeded_model"
SEEDED_JOB = "seeded-job"
SEEDED_BATCH_JOB = "seeded-batch"
EXAMPLES_PER_OPERATION = 25  # x 2 modes x ~15 operations: several seconds in-process
FUZZED_TAGS = {"bedrock control plane", "bedrock batch inference", "outcrop admin", "ops", "openai"}
# Admin writes (warming a model, ...) start model copies: the serving tests cover them, not this one.
READ_ONLY_TAGS = {"outcrop admin"}
# NUL in a source URI is a known 500 (test_source_uri_with_nul_byte_is_a_validation_exception); kept out
# of the general fuzzing so that the rest keeps being checked.
NUL = "\x00"


@dataclass
class FuzzTarget:
    schema: Any
    operations: list[tuple[str, str]]  # (METHOD, path) fuzzed, deletes last
    seeded_job_arn: str
    seeded_model_arn: str
    seeded_batch_arn: str
    import_root: Path

    def existing_identifier(self, path: str) -> str:
        """An identifier that exists, for the operation's one path parameter."""
        if path.startswith(BATCH_CREATE_PATH):
            return self.seeded_batch_arn
        is_job = "import-job" in path
        if path.startswith("/outcrop/"):  # admin routes take names (an ARN's '/' ends the segment)
            return SEEDED_JOB if is_job else SEEDED_MODEL
        return self.seeded_job_arn if is_job else self.seeded_model_arn


def import_synchronously(registry: Registry, folder: Path) -> tuple[str, str]:
    """Run one import to completion through the production worker; returns (job ARN, model ARN)."""
    job = registry.create_import_job(
        CreateImportJob(job_name=SEEDED_JOB, imported_model_name=SEEDED_MODEL, source_uri=str(folder))
    )
    worker = ImportWorker(registry)
    assert registry.jobs.claim(job.id, worker.worker_id, worker.lease_seconds)
    worker.run(job.id)
    model = registry.get_model(SEEDED_MODEL)
    return registry.job_arn(registry.get_job(job.id)), registry.model_arn(model)


def fuzzed_operations(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Every control-plane and ops operation, and the admin API's read-only ones; deletes last."""
    found = [
        (method.upper(), path)
        for path, operations in raw["paths"].items()
        for method, operation in operations.items()
        if (tags := set(operation.get("tags", []))) & FUZZED_TAGS
        and not (tags & READ_ONLY_TAGS and method.upper() != "GET")
    ]
    return sorted(found, key=lambda op: op[0] == "DELETE")


def with_create_bodies(raw: dict[str, Any]) -> dict[str, Any]:
    """The app's OpenAPI plus the JSON schemas of the bodies the create operations read by hand."""
    raw = copy.deepcopy(raw)
    components = raw.setdefault("components", {}).setdefault("schemas", {})
    for path, wire in HAND_READ_BODIES.items():
        body = wire.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[wire.__name__] = body
        raw["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{wire.__name__}"}}},
        }
    return raw


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]) -> FuzzTarget:
    root = tmp_path_factory.mktemp("fuzz")
    config = load_config(
        data_dir=root / "data",
        **{
            "registry.allowed_roots": [root],
            "store.job_lease_seconds": 2.0,
            "auth.bootstrap_access_key_id": TEST_ACCESS_KEY_ID,
            "auth.bootstrap_secret_access_key": TEST_SECRET_ACCESS_KEY,
            "auth.bootstrap_api_key": TEST_API_KEY,
        },
    )
    # No background worker: fuzzed jobs stay queued, so every response comes from the request path.
    services = build_services(config, start_workers=False)
    folder = root / "models" / "seed"
    shutil.copytree(tiny_model_cache(family="llama"), folder)
    job_arn, model_arn = import_synchronously(services.registry, folder)
    (root / "batch-in.jsonl").write_text('{"recordId": "r1", "modelInput": {"prompt": "hi"}}\n')
    batch = services.extra["batch"]
    batch_job = batch.create_job(
        CreateBatchJob(
            job_name=SEEDED_BATCH_JOB,
            model_id=SEEDED_MODEL,
            input_uri=str(root / "batch-in.jsonl"),
            output_uri=str(root / "batch-out"),
        )
    )
    app = create_app(config, services=services)
    raw = with_create_bodies(app.openapi())
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    return FuzzTarget(
        schema=schema,
        operations=fuzzed_operations(raw),
        seeded_job_arn=job_arn,
        seeded_model_arn=model_arn,
        seeded_batch_arn=batch.job_arn(batch_job),
        import_root=root,
    )


def test_fuzzing_covers_the_control_plane_admin_and_ops(target: FuzzTarget) -> None:
    fuzzed = set(target.operations)
    assert {("POST", CREATE_PATH), ("GET", "/model-import-jobs/{jobIdentifier}")} <= fuzzed
    assert {("GET", "/imported-models"), ("DELETE", "/imported-models/{modelIdentifier}")} <= fuzzed
    assert {("GET", "/outcrop/import-jobs/{identifier}"), ("GET", "/health"), ("GET", "/metrics")} <= fuzzed
    assert {("POST", BATCH_CREATE_PATH), ("GET", "/model-invocation-jobs")} <= fuzzed
    assert ("POST", "/model-invocation-job/{jobIdentifier}/stop") in fuzzed
    assert {("PUT", "/logging/modelinvocations"), ("DELETE", "/logging/modelinvocations")} <= fuzzed
    assert {("GET", "/v1/models"), ("POST", COMPLETIONS_PATH), ("POST", CHAT_PATH)} <= fuzzed
    assert target.operations[-1][0] == "DELETE"


def near_valid_openai_bodies(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies for the seeded model, small enough to generate quickly, with every sampling field
    drawn from its edges and past them (types, ranges, stop lists, logit biases, prompts of ids)."""
    numbers = (
        st.sampled_from([-1, 0, 0.5, 1, 2, 2.5, 1e308, -0.0])
        | st.booleans()
        | st.none()
        | st.text(max_size=3)
    )
    small_ints = st.integers(-2, 4) | st.sampled_from([2**31, None, "1", 1.5, True])
    stop = st.none() | st.text(max_size=4) | st.lists(st.text(max_size=4) | st.integers(), max_size=5)
    sampling = {
        "max_tokens": st.integers(-1, 4) | st.sampled_from([None, 2**31, "4", 2.0]),
        "temperature": numbers,
        "top_p": numbers,
        "top_k": small_ints,
        "min_p": numbers,
        "repetition_penalty": numbers,
        "frequency_penalty": numbers,
        "presence_penalty": numbers,
        "stop": stop,
        "seed": st.integers(-(2**64), 2**64) | st.none(),
        "n": small_ints,
        "stream": st.booleans() | st.sampled_from([None, "yes"]),
        "stream_options": st.none()
        | st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | st.just(1)}),
        "logit_bias": st.none() | st.dictionaries(st.text(max_size=6), numbers, max_size=3),
        "priority": small_ints,
        "user": st.none() | st.text(max_size=4),
        "unknown_field": st.integers(),
    }
    if path == COMPLETIONS_PATH:
        extra = {
            "prompt": st.text(max_size=20)
            | st.lists(st.text(max_size=5), max_size=3)
            | st.lists(st.integers(-5, 2**40), max_size=5)
            | st.lists(st.lists(st.integers(-5, 300), max_size=3), max_size=2)
            | st.none(),
            "logprobs": small_ints,
            "echo": st.booleans() | st.just("no"),
            "suffix": st.none() | st.text(max_size=3),
            "best_of": small_ints,
        }
    else:
        message = st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer", "robot"])},
            optional={
                "content": st.text(max_size=20)
                | st.none()
                | st.lists(
                    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=5)}), max_size=2
                )
                | st.integers(),
                "name": st.text(max_size=3),
            },
        )
        extra = {
            "messages": st.lists(message, max_size=4) | st.none() | st.text(max_size=3),
            "max_completion_tokens": small_ints,
            "logprobs": st.booleans() | st.just(3),
            "top_logprobs": small_ints,
            "response_format": st.none() | st.sampled_from([{"type": "text"}, {"type": "json_object"}, {}]),
            "add_generation_prompt": st.booleans(),
        }
    return st.fixed_dictionaries({"model": st.just(SEEDED_MODEL)}, optional={**sampling, **extra})


@pytest.fixture(scope="module")
def seed_client(target: FuzzTarget) -> Iterator[Any]:
    """A client on one event loop (the copy's connections live on it) with the seeded model warmed,
    so near-valid OpenAI bodies reach a model copy's validation. No lifespan: the app stays up.
    Its tests come before the ones that delete the seeded model."""
    import anyio.from_thread
    from fastapi.testclient import TestClient

    with anyio.from_thread.start_blocking_portal() as portal:
        client = TestClient(target.schema.app, raise_server_exceptions=False)
        client.portal = portal  # every request on this loop, as in a real server
        response = client.post(
            f"/outcrop/models/{SEEDED_MODEL}/warm", json={"copies": 1}, headers=AUTH, timeout=180
        )
        assert response.status_code == 200, response.text
        yield client


@pytest.mark.parametrize("path", [COMPLETIONS_PATH, CHAT_PATH])
def test_near_valid_openai_requests_end_in_no_server_error(seed_client: Any, path: str) -> None:
    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=near_valid_openai_bodies(path))
    def run(body: dict[str, Any]) -> None:
        response = seed_client.post(path, json=body, headers=AUTH)
        assert response.status_code < 500, (
            f"{response.status_code} for {json.dumps(body)}: {response.text[:2000]}"
        )

    run()


def assert_no_server_error(case: schemathesis.Case) -> None:
    response = case.call(headers=AUTH)
    assert response.status_code < 500, (
        f"{response.status_code} for {case.as_curl_command()}\n"
        f"body sent: {json.dumps(case.body, default=str) if case.body is not None else '-'}\n"
        f"response: {response.text[:2000]}"
    )


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_fuzzed_request_ends_in_a_server_error(target: FuzzTarget, mode: GenerationMode) -> None:
    for method, path in target.operations:

        @FUZZ_SETTINGS
        @given(case=target.schema[path][method].as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            assert_no_server_error(case)

        try:
            run()
        except Unsatisfiable:
            # Negative mode: the operation's schema admits every value (plain string parameters).
            if mode is GenerationMode.POSITIVE:
                raise


def test_fuzzed_queries_on_existing_resources_end_in_no_server_error(target: FuzzTarget) -> None:
    for method, path in target.operations:
        if "{" not in path:
            continue
        name = path[path.index("{") + 1 : path.index("}")]
        strategy = target.schema[path][method].as_strategy(
            path_parameters={name: target.existing_identifier(path)}
        )

        @FUZZ_SETTINGS
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            assert_no_server_error(case)

        run()


def near_valid_create_bodies(import_root: Path) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies that pass the name patterns, so the service path behind validation runs too
    (duplicates, quotas, every kind of source URI, tags, tokens)."""
    names = st.sampled_from(["a", "dup", "x-1", "m_2", "seeded-job", "Z.9+"]) | st.from_regex(
        r"[a-zA-Z0-9][a-zA-Z0-9]{0,20}", fullmatch=True
    )
    model_names = st.sampled_from(["a", "dup", SEEDED_MODEL, "m_2-x"]) | st.from_regex(
        r"[0-9a-zA-Z]{1,20}", fullmatch=True
    )
    uris = st.sampled_from(
        [
            str(import_root / "models" / "seed"),
            f"file://{import_root}/models/seed",
            f"file://{import_root}/models/../models/seed",
            "file://otherhost/x",
            "/etc",
            "/nonexistent/model",
            "s3://bucket/prefix/",
            "s3:///nobucket",
            "s3://",
            "relative/path",
            "",
            " ",
            "file://",
            "file:///%2e%2e/etc",
            "file:///%E2%82",
            "s3://b/../x",
        ]
    ) | st.text(st.characters(exclude_characters=NUL), max_size=40)
    tags = st.lists(
        st.fixed_dictionaries({"key": st.text(max_size=10), "value": st.text(max_size=10)}), max_size=3
    )
    return st.fixed_dictionaries(
        {
            "jobName": names,
            "importedModelName": model_names,
            "modelDataSource": st.fixed_dictionaries(
                {"s3DataSource": st.fixed_dictionaries({"s3Uri": uris})}
            ),
        },
        optional={
            "roleArn": st.sampled_from(
                ["arn:aws:iam::123456789012:role/Importer", "arn:aws:iam::1:role/", "x"]
            ),
            "jobTags": tags,
            "importedModelTags": tags,
            "clientRequestToken": st.text(min_size=1, max_size=8),
            "vpcConfig": st.fixed_dictionaries(
                {
                    "subnetIds": st.lists(st.text(max_size=5)),
                    "securityGroupIds": st.lists(st.text(max_size=5)),
                }
            ),
            "importedModelKmsKeyId": st.text(min_size=1, max_size=8),
        },
    )


def test_near_valid_create_requests_end_in_no_server_error(target: FuzzTarget) -> None:
    operation = target.schema[CREATE_PATH]["POST"]
    import_root = target.import_root

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(), body=near_valid_create_bodies(import_root))
    def run(case: schemathesis.Case, body: dict[str, Any]) -> None:
        case.body = body
        assert_no_server_error(case)

    run()


def near_valid_batch_bodies(import_root: Path) -> st.SearchStrategy[dict[str, Any]]:
    """CreateModelInvocationJob bodies that pass the shapes, so validation behind them runs: names,
    models (present, absent, ARNs), input and output locations of every kind, types, timeouts."""
    uris = st.sampled_from(
        [
            str(import_root / "batch-in.jsonl"),
            f"file://{import_root}/batch-in.jsonl",
            str(import_root),
            str(import_root / "missing.jsonl"),
            "/etc/passwd",
            "s3://bucket/in/",
            "s3://",
            "file:///%2e%2e/etc",
            "relative.jsonl",
            "",
        ]
    ) | st.text(st.characters(exclude_characters=NUL), max_size=30)
    return st.fixed_dictionaries(
        {
            "jobName": st.sampled_from(["b", "dup", SEEDED_BATCH_JOB])
            | st.from_regex(r"[a-zA-Z0-9]{1,12}", fullmatch=True),
            "modelId": st.sampled_from(
                [SEEDED_MODEL, "absent", "arn:aws:bedrock:us-east-1:1:imported-model/x"]
            )
            | st.text(min_size=1, max_size=20),
            "inputDataConfig": st.fixed_dictionaries(
                {"s3InputDataConfig": st.fixed_dictionaries({"s3Uri": uris})}
            ),
            "outputDataConfig": st.fixed_dictionaries(
                {"s3OutputDataConfig": st.fixed_dictionaries({"s3Uri": uris})}
            ),
        },
        optional={
            "roleArn": st.sampled_from(["arn:aws:iam::123456789012:role/Batch", "x"]),
            "timeoutDurationInHours": st.integers(-5, 500),
            "modelInvocationType": st.sampled_from(["InvokeModel", "Converse", "Embed", ""]),
            "clientRequestToken": st.text(min_size=1, max_size=8),
            "tags": st.lists(
                st.fixed_dictionaries({"key": st.text(max_size=10), "value": st.text(max_size=10)}),
                max_size=3,
            ),
        },
    )


def test_near_valid_batch_requests_end_in_no_server_error(target: FuzzTarget) -> None:
    operation = target.schema[BATCH_CREATE_PATH]["POST"]

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(), body=near_valid_batch_bodies(target.import_root))
    def run(case: schemathesis.Case, body: dict[str, Any]) -> None:
        case.body = body
        assert_no_server_error(case)

    run()


def test_job_identifier_check_takes_linear_time(target: FuzzTarget) -> None:
    case = target.schema["/model-import-jobs/{jobIdentifier}"]["GET"].Case(
        path_parameters={"jobIdentifier": "a" + "-" * 24 + "!"}
    )
    started = time.perf_counter()
    response = case.call(headers=AUTH)
    assert response.status_code == 400
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("uri", ["file:///%00", "/models/a\x00b"])
def test_source_uri_with_nul_byte_is_a_validation_exception(target: FuzzTarget, uri: str) -> None:
    case = target.schema[CREATE_PATH]["POST"].Case(
        body={
            "jobName": "nul",
            "importedModelName": "nul",
            "modelDataSource": {"s3DataSource": {"s3Uri": uri}},
        }
    )
    response = case.call(headers=AUTH)
    assert response.status_code == 400
    headers = {k.lower(): v for k, v in response.headers.items()}
    value = headers["x-amzn-errortype"]
    assert "ValidationException" in (value if isinstance(value, str) else value[0])


def test_no_route_answers_a_caller_without_credentials(target: FuzzTarget) -> None:
    """Every operation of every surface, called with no or a wrong key, is refused (never served, never 500)."""
    from fastapi.testclient import TestClient

    client = TestClient(target.schema.app, raise_server_exceptions=False)
    checked = 0
    for template, operations in target.schema.app.openapi()["paths"].items():
        if template in ("/health", "/metrics", "/console"):  # open by design (the console page holds no data)
            continue
        path = re.sub(r"\{[^}]+\}", "x", template)
        for method in operations:
            for headers in ({}, {"Authorization": "Bearer ocp-wrong"}):
                response = client.request(
                    method.upper(), path, headers=headers, json={} if method in ("post", "put") else None
                )
                assert response.status_code in (401, 403), (
                    f"{method.upper()} {path} -> {response.status_code}"
                )
                checked += 1
    assert checked >= 40


# -- runtime bodies ---------------------------------------------------------------------
# The /model/* routes read their bodies by hand and validate them before resolving the model,
# so fuzzed bodies against an absent model exercise every check without starting a copy;
# CountTokens runs against the seeded model (it needs a tokenizer, not a copy).

RUNTIME_OPERATIONS = ["invoke", "invoke-with-response-stream", "converse", "converse-stream"]
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _sometimes(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | JSON_VALUES


def converse_bodies() -> st.SearchStrategy[dict[str, Any]]:
    block = st.fixed_dictionaries({"text": _sometimes(st.text(max_size=8))})
    message = st.fixed_dictionaries(
        {
            "role": _sometimes(st.sampled_from(["user", "assistant", "system", ""])),
            "content": _sometimes(st.lists(_sometimes(block), max_size=2)),
        }
    )
    config = st.fixed_dictionaries(
        {},
        optional={
            "maxTokens": _sometimes(st.integers(-5, 10**7)),
            "temperature": _sometimes(st.floats()),
            "topP": _sometimes(st.floats()),
            "stopSequences": _sometimes(st.lists(st.text(max_size=3), max_size=3)),
        },
    )
    extra = st.dictionaries(st.sampled_from(["temperature", "top_p", "top_k", "n", "seed"]), JSON_VALUES)
    valid = [{"role": "user", "content": [{"text": "hi"}]}]  # often, so the checks behind it run
    return st.fixed_dictionaries(
        {"messages": st.just(valid) | st.just(valid) | _sometimes(st.lists(_sometimes(message), max_size=2))},
        optional={
            "system": _sometimes(st.lists(block, max_size=2)),
            "inferenceConfig": config | _sometimes(config),
            "additionalModelRequestFields": _sometimes(extra),
        },
    )


def invoke_bodies() -> st.SearchStrategy[dict[str, Any]]:
    keys = ["max_gen_len", "max_tokens", "temperature", "top_p", "top_k", "stop", "n", "seed"]
    return st.fixed_dictionaries(
        {},
        optional={
            "prompt": _sometimes(st.text(max_size=8)),
            "messages": _sometimes(
                st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": JSON_VALUES}), max_size=2)
            ),
            **{key: _sometimes(st.integers(-5, 10**7) | st.floats()) for key in keys},
        },
    )


def test_fuzzed_runtime_bodies_end_in_no_server_error(target: FuzzTarget) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(target.schema.app, raise_server_exceptions=False)

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        operation=st.sampled_from(RUNTIME_OPERATIONS),
        body=converse_bodies() | invoke_bodies() | converse_bodies() | invoke_bodies() | JSON_VALUES,
    )
    def run(operation: str, body: Any) -> None:
        raw = json.dumps(body)  # NaN and Infinity included, as some clients write them
        response = client.post(f"/model/absent-model/{operation}", content=raw, headers=AUTH)
        assert response.status_code < 500, (
            f"{response.status_code} for {operation} {raw[:300]}: {response.text[:500]}"
        )

    run()


def test_fuzzed_count_tokens_inputs_end_in_no_server_error(target: FuzzTarget) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(target.schema.app, raise_server_exceptions=False)
    encoded = st.builds(lambda b: base64.b64encode(json.dumps(b).encode()).decode(), invoke_bodies())
    inputs = (
        st.fixed_dictionaries({"converse": _sometimes(converse_bodies())})
        | st.fixed_dictionaries({"invokeModel": st.fixed_dictionaries({"body": _sometimes(encoded)})})
        | JSON_VALUES
    )

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(source=inputs)
    def run(source: Any) -> None:
        raw = json.dumps({"input": source})
        response = client.post(f"/model/{SEEDED_MODEL}/count-tokens", content=raw, headers=AUTH)
        assert response.status_code < 500, f"{response.status_code} for {raw[:300]}: {response.text[:500]}"

    run()
