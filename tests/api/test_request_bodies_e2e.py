"""No body is a 500: bodies Python's json or the translation choked on are 400s in the caller's dialect,
through real clients (boto3, the openai client, raw HTTP) and a real server on loopback."""

from __future__ import annotations

import json
from typing import Any

import botocore.exceptions
import httpx
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import (
    TEST_ACCESS_KEY_ID,
    TEST_API_KEY,
    TEST_SECRET_ACCESS_KEY,
    ServerProcess,
    api,
    boto3_client,
)

pytestmark = pytest.mark.e2e

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 5_000
# Bodies json.loads turned into RecursionError / ValueError (500s), or into a string the copy
# could not encode (424): each with what the 400's message must say.
BAD_BODIES = [
    pytest.param('{"prompt": "hi", "extra": ' + DEEP + "}", "more than 64 levels deep", id="deep"),
    pytest.param('{"prompt": "hi", "seed": ' + HUGE_INT + "}", "integer of 5,000 digits", id="huge-int"),
    pytest.param('{"prompt": "hi", "temperature": NaN}', "NaN, which is not JSON", id="nan"),
    pytest.param('{"prompt": "a\\ud800b", "max_gen_len": 5}', "'prompt' holds an unpaired", id="surrogate"),
]
RUNTIME_PATHS = ["invoke", "invoke-with-response-stream", "converse", "converse-stream", "count-tokens"]


@pytest.fixture(scope="module")
def runtime(shared_server: ServerProcess) -> Any:
    # Converse parameters are typed client-side; turn that off to send what other SDKs could.
    return boto3_client("bedrock-runtime", shared_server.url, parameter_validation=False)


@pytest.mark.parametrize(("raw", "needle"), BAD_BODIES)
def test_boto3_invoke_model_with_a_bad_body_is_a_validation_exception(
    runtime: Any, raw: str, needle: str
) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        runtime.invoke_model(modelId="no-such-model", body=raw.encode())
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationException" and needle in error["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("path", RUNTIME_PATHS)
@pytest.mark.parametrize(("raw", "needle"), BAD_BODIES[:3])
def test_every_runtime_operation_answers_a_bad_body_with_400(
    shared_server: ServerProcess, path: str, raw: str, needle: str
) -> None:
    r = api.post(f"{shared_server.url}/model/m/{path}", content=raw)
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"].startswith("ValidationException")
    assert needle in r.json()["message"]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize(("raw", "needle"), BAD_BODIES[:3])
def test_openai_surface_answers_a_bad_body_with_an_openai_400(
    shared_server: ServerProcess, path: str, raw: str, needle: str
) -> None:
    r = api.post(f"{shared_server.url}{path}", content=raw.replace('"prompt"', '"model": "m", "prompt"'))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and needle in error["message"]


def test_the_openai_client_gets_a_bad_request_error_for_a_deep_body(shared_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{shared_server.url}/v1", api_key=TEST_API_KEY, max_retries=0)
    deep: Any = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="m", prompt="hi", extra_body={"logit_bias": {"1": deep}})
    assert "more than 64 levels deep" in info.value.message


@pytest.mark.parametrize(
    "path", ["/model-import-jobs", "/model-invocation-job", "/logging/modelinvocations", "/outcrop/keys"]
)
def test_control_plane_and_admin_bodies_are_bounded_too(shared_server: ServerProcess, path: str) -> None:
    method = api.put if path == "/logging/modelinvocations" else api.post
    r = method(f"{shared_server.url}{path}", content='{"jobName": ' + DEEP + "}")
    assert r.status_code == 400 and "more than 64 levels deep" in r.json()["message"]


def signed_post(url: str, body: bytes) -> httpx.Response:
    """A POST signed with botocore's own SigV4 signer, as boto3 sends it, with any body at all."""
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY), "bedrock", "us-east-1").add_auth(
        request
    )
    prepared = request.prepare()
    return httpx.post(url, content=body, headers=dict(prepared.headers.items()), timeout=30)


BAD_INFERENCE_CONFIGS = [
    ('{"maxTokens": "abc"}', "inferenceConfig.maxTokens"),
    ('{"maxTokens": [1]}', "inferenceConfig.maxTokens"),
    ('{"maxTokens": NaN}', "body"),  # not JSON: refused at parse time
    ('{"maxTokens": Infinity}', "body"),
    ('{"maxTokens": 1e999}', "body"),
    ('{"maxTokens": 0}', "inferenceConfig.maxTokens"),
    ('{"temperature": "hot"}', "inferenceConfig.temperature"),
    ('{"temperature": "NaN"}', "inferenceConfig.temperature"),  # how botocore serializes float('nan')
    ('{"topP": {}}', "inferenceConfig.topP"),
    ('{"stopSequences": 5}', "inferenceConfig.stopSequences"),
    ("[1]", "inferenceConfig"),
    ('"fast"', "inferenceConfig"),
]


@pytest.mark.parametrize("operation", ["converse", "converse-stream"])
@pytest.mark.parametrize(("config", "field"), BAD_INFERENCE_CONFIGS)
def test_converse_with_a_wrong_inference_config_is_a_validation_exception_naming_the_field(
    shared_server: ServerProcess, operation: str, config: str, field: str
) -> None:
    body = '{"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": ' + config + "}"
    r = signed_post(f"{shared_server.url}/model/no-such-model/{operation}", body.encode())
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"].startswith("ValidationException")
    message = r.json()["message"]
    assert (f"'{field}'" in message) if field != "body" else ("not JSON" in message or "too large" in message)


@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"maxTokens": "abc"}, "maxTokens"),
        ({"temperature": float("nan")}, "temperature"),
        ({"topP": 2.0}, "topP"),
    ],
)
def test_boto3_converse_without_client_validation_gets_the_field_named(
    runtime: Any, operation: str, config: dict[str, Any], field: str
) -> None:
    messages = [{"role": "user", "content": [{"text": "hi"}]}]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        getattr(runtime, operation)(modelId="no-such-model", messages=messages, inferenceConfig=config)
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationException" and f"'inferenceConfig.{field}'" in error["Message"]


@pytest.mark.parametrize(
    ("models", "needle"),
    [([1], "a list with non-string items"), ("my-llama", "'models' is a str"), ({"a": 1}, "a dict")],
)
def test_create_key_with_models_that_are_not_a_list_of_names_is_a_validation_exception(
    shared_server: ServerProcess, models: Any, needle: str
) -> None:
    r = api.post(f"{shared_server.url}/outcrop/keys", json={"name": "k1", "models": models})
    assert r.status_code == 400 and needle in r.json()["message"]
    assert "list of imported model names" in r.json()["message"]


def test_count_tokens_with_a_bad_embedded_body_names_it(shared_server: ServerProcess) -> None:
    import base64

    for source, needle in [
        ({"converse": [1]}, "input.converse must be an object"),
        ({"invokeModel": {"body": base64.b64encode(DEEP.encode()).decode()}}, "input.invokeModel.body nests"),
        ({"invokeModel": {"body": 5}}, "base64 of a JSON InvokeModel body"),
    ]:
        r = api.post(f"{shared_server.url}/model/m/count-tokens", content=json.dumps({"input": source}))
        assert r.status_code == 400 and needle in r.json()["message"], r.text
