"""Python handler modules through a real server: a looping or raising handler fails its own requests
with SageMaker's ModelError, and the other endpoints keep answering."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.test_sagemaker_control_e2e import wait_for_endpoint
from tests.conftest import ServerProcess, boto3_client, import_and_wait

pytestmark = pytest.mark.e2e

GOOD = (
    "def input_fn(payload, content_type):\n"
    "    return {'inputs': 'Question: ' + payload['question'], 'parameters': {'max_new_tokens': 3}}\n"
    "def output_fn(response, accept):\n"
    "    return 'ANSWER=' + response[0]['generated_text']\n"
)
LOOPS = "def input_fn(payload, content_type):\n    while True:\n        pass\n"
RAISES = "def output_fn(response, accept):\n    raise KeyError('score')\n"


def test_broken_handlers_fail_their_requests_and_others_keep_answering(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    for name, source in (("good", GOOD), ("loops", LOOPS), ("raises", RAISES)):
        (handlers / f"{name}.py").write_text(source)
    server = start_server(
        OUTCROP_SAGEMAKER__HANDLERS_DIR=str(handlers), OUTCROP_SAGEMAKER__HANDLER_TIMEOUT_SECONDS="2"
    )
    import_and_wait(boto3_client("bedrock", server.url), tiny_model(), "llm")
    sm = boto3_client("sagemaker", server.url)
    for name in ("good", "loops", "raises"):
        sm.create_model(
            ModelName=name, PrimaryContainer={"ModelDataUrl": "llm", "Environment": {"OUTCROP_HANDLER": name}}
        )
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[{"VariantName": "v", "ModelName": name, "InitialInstanceCount": 1}],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    for name in ("good", "loops", "raises"):
        assert wait_for_endpoint(sm, name, timeout=180)["EndpointStatus"] == "InService"
    runtime = boto3_client("sagemaker-runtime", server.url)

    def invoke(endpoint: str) -> Any:
        return runtime.invoke_endpoint(
            EndpointName=endpoint, Body=json.dumps({"question": "why", "inputs": "x"})
        )

    assert invoke("good")["Body"].read().decode().startswith("ANSWER=")
    for endpoint, message in (("loops", "did not return within 2 s"), ("raises", "raised KeyError: 'score'")):
        with pytest.raises(ClientError) as caught:
            invoke(endpoint)
        error = caught.value.response
        assert error["Error"]["Code"] == "ModelError"
        assert error["OriginalStatusCode"] == 500
        assert message in error["Error"]["Message"]
        assert invoke("good")["Body"].read().decode().startswith("ANSWER=")


def test_a_handler_is_refused_when_the_operator_has_not_enabled_them(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    sm = boto3_client("sagemaker", server.url)
    with pytest.raises(ClientError, match="handler modules are off on this server"):
        sm.create_model(
            ModelName="h",
            PrimaryContainer={"ModelDataUrl": "anything", "Environment": {"OUTCROP_HANDLER": "good"}},
        )
