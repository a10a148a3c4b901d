"""The boto3 ``sagemaker-runtime`` client, unchanged, invoking endpoints over imported models served by
real copies: TGI and Messages API bodies, streaming through botocore's event-stream parser, errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.api.test_sagemaker_control_e2e import wait_for_endpoint
from tests.conftest import ServingServer, boto3_client

pytestmark = pytest.mark.e2e

QA_TEMPLATE = "Question: {{ question }} Context: {{ context }}"
ANSWER_TEMPLATE = '{"answer": {{ generated_text | tojson }}, "tokens": {{ usage.completion_tokens }}}'


@pytest.fixture(scope="module")
def sm(serving_server: ServingServer) -> Any:
    return boto3_client("sagemaker", serving_server.url)


@pytest.fixture(scope="module")
def runtime(serving_server: ServingServer) -> Any:
    return boto3_client("sagemaker-runtime", serving_server.url)


def deploy(
    sm: Any, name: str, variants: list[tuple[str, str, float]], environment: dict[str, str] | None = None
) -> None:
    """An endpoint with one variant per (variant name, imported model, weight)."""
    for variant, imported, _ in variants:
        sm.create_model(
            ModelName=f"{name}-{variant}",
            PrimaryContainer={"ModelDataUrl": imported, "Environment": environment or {}},
        )
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": f"{name}-{variant}",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.g5.xlarge",
                "InitialVariantWeight": weight,
            }
            for variant, _, weight in variants
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    assert wait_for_endpoint(sm, name)["EndpointStatus"] == "InService"


@pytest.fixture(scope="module")
def endpoint(sm: Any, serving_server: ServingServer) -> str:
    deploy(sm, "rt-main", [("AllTraffic", serving_server.chat, 1.0)])
    return "rt-main"


def invoke(runtime: Any, endpoint: str, body: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    response = runtime.invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps(body), ContentType="application/json", **kwargs
    )
    return json.loads(response["Body"].read()), response


def test_tgi_payload_gets_generated_text_and_greedy_is_deterministic(runtime: Any, endpoint: str) -> None:
    body = {"inputs": "The quick brown", "parameters": {"max_new_tokens": 8}}
    first, response = invoke(runtime, endpoint, body)
    second, _ = invoke(runtime, endpoint, body)
    assert isinstance(first, list) and isinstance(first[0]["generated_text"], str)
    assert first == second
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ContentType"] == "application/json"


def test_sampling_parameters_details_and_full_text(runtime: Any, endpoint: str) -> None:
    parameters = {
        "max_new_tokens": 6,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "repetition_penalty": 1.1,
        "do_sample": True,
        "seed": 7,
        "stop": ["\n\n"],
        "return_full_text": True,
        "details": True,
    }
    answer, _ = invoke(runtime, endpoint, {"inputs": "Hello", "parameters": parameters})
    assert answer[0]["generated_text"].startswith("Hello")
    details = answer[0]["details"]
    assert details["finish_reason"] in ("length", "eos_token", "stop_sequence")
    assert 1 <= details["generated_tokens"] <= 6
    assert details["seed"] == 7


def test_a_list_of_inputs_gets_one_answer_each(runtime: Any, endpoint: str) -> None:
    answer, _ = invoke(runtime, endpoint, {"inputs": ["one", "two"], "parameters": {"max_new_tokens": 3}})
    assert len(answer) == 2


def test_messages_api_body_gets_a_chat_completion(runtime: Any, endpoint: str) -> None:
    answer, _ = invoke(runtime, endpoint, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"


def test_text_plain_body_is_the_prompt(runtime: Any, endpoint: str) -> None:
    response = runtime.invoke_endpoint(EndpointName=endpoint, Body=b"Once upon", ContentType="text/plain")
    assert isinstance(json.loads(response["Body"].read())[0]["generated_text"], str)


def test_stream_parts_carry_tgi_token_lines_adding_up_to_the_answer(runtime: Any, endpoint: str) -> None:
    body = {"inputs": "The quick brown", "parameters": {"max_new_tokens": 8}}
    whole, _ = invoke(runtime, endpoint, body)
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=json.dumps(body), ContentType="application/json"
    )
    assert response["ContentType"] == "text/event-stream"
    raw = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"])
    events = [json.loads(line[len("data:") :]) for line in raw.decode().split("\n\n") if line.strip()]
    assert "".join(e["token"]["text"] for e in events) == whole[0]["generated_text"]
    assert all(e["generated_text"] is None for e in events[:-1])
    assert events[-1]["generated_text"] == whole[0]["generated_text"]
    assert events[-1]["details"]["generated_tokens"] >= 1


def test_streamed_messages_are_chat_chunks_ending_with_done(runtime: Any, endpoint: str) -> None:
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=endpoint,
        Body=json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    )
    raw = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"]).decode()
    lines = [line for line in raw.split("\n\n") if line.strip()]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][len("data:") :])["object"] == "chat.completion.chunk"


def test_unknown_endpoint_is_sagemakers_validation_error(runtime: Any) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(runtime, "no-such-endpoint", {"inputs": "x"})
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"].startswith("Endpoint no-such-endpoint of account 000000000000 not found.")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_bad_parameters_and_bodies_name_the_field(runtime: Any, endpoint: str) -> None:
    for body, named in (
        ({"inputs": "x", "parameters": {"temperature": "hot"}}, "parameters.temperature"),
        ({"inputs": "x", "parameters": {"max_new_tokens": 0}}, "parameters.max_new_tokens"),
        ({"prompt": "x"}, "inputs"),
        ({"inputs": ""}, "inputs"),
    ):
        with pytest.raises(ClientError) as caught:
            invoke(runtime, endpoint, body)
        assert caught.value.response["Error"]["Code"] == "ValidationError"
        assert named in caught.value.response["Error"]["Message"]


def test_unsupported_content_type_accept_and_inference_component_are_validation_errors(
    runtime: Any, endpoint: str
) -> None:
    calls = (
        dict(Body=b"a,b", ContentType="application/x-npy"),
        dict(Body=b'{"inputs": "x"}', ContentType="application/json", Accept="text/csv"),
        dict(Body=b'{"inputs": "x"}', ContentType="application/json", InferenceComponentName="ic-1"),
    )
    for kwargs, named in zip(
        calls, ("ContentType", "Accept", "Inference component ic-1 is not on endpoint"), strict=True
    ):
        with pytest.raises(ClientError) as caught:
            runtime.invoke_endpoint(EndpointName=endpoint, **kwargs)
        assert caught.value.response["Error"]["Code"] == "ValidationError"
        assert named in caught.value.response["Error"]["Message"]


def test_messages_on_a_model_without_chat_template_is_a_validation_error(
    sm: Any, runtime: Any, serving_server: ServingServer
) -> None:
    deploy(sm, "rt-plain", [("AllTraffic", serving_server.plain, 1.0)])
    with pytest.raises(ClientError) as caught:
        invoke(runtime, "rt-plain", {"messages": [{"role": "user", "content": "hi"}]})
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "chat template" in caught.value.response["Error"]["Message"]


def test_target_variant_picks_the_variant_and_weights_split_traffic(
    sm: Any, runtime: Any, serving_server: ServingServer
) -> None:
    deploy(sm, "rt-ab", [("A", serving_server.chat, 1.0), ("B", serving_server.plain, 1.0)])
    body = {"inputs": "hi", "parameters": {"max_new_tokens": 1}}
    for variant in ("A", "B"):
        _, response = invoke(runtime, "rt-ab", body, TargetVariant=variant)
        assert response["InvokedProductionVariant"] == variant
    seen = {invoke(runtime, "rt-ab", body)[1]["InvokedProductionVariant"] for _ in range(24)}
    assert seen == {"A", "B"}  # 2**-23 odds of a false failure
    with pytest.raises(ClientError) as caught:
        invoke(runtime, "rt-ab", body, TargetVariant="C")
    assert "TargetVariant 'C' is not a variant of endpoint 'rt-ab'; its variants: A, B." in str(caught.value)


def test_templates_map_the_payload_and_shape_the_answer(
    sm: Any, runtime: Any, serving_server: ServingServer
) -> None:
    deploy(
        sm,
        "rt-qa",
        [("AllTraffic", serving_server.chat, 1.0)],
        {"OUTCROP_INPUT_TEMPLATE": QA_TEMPLATE, "OUTCROP_OUTPUT_TEMPLATE": ANSWER_TEMPLATE},
    )
    answer, _ = invoke(
        runtime, "rt-qa", {"question": "Who?", "context": "Nobody.", "parameters": {"max_new_tokens": 4}}
    )
    assert set(answer) == {"answer", "tokens"}
    assert 1 <= answer["tokens"] <= 4
    with pytest.raises(ClientError) as caught:
        invoke(runtime, "rt-qa", {"question": "Who?"})
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "'context' is undefined" in caught.value.response["Error"]["Message"]


def test_a_template_with_a_syntax_error_is_refused_at_create_model(
    sm: Any, serving_server: ServingServer
) -> None:
    with pytest.raises(ClientError) as caught:
        sm.create_model(
            ModelName="rt-badtpl",
            PrimaryContainer={
                "ModelDataUrl": serving_server.chat,
                "Environment": {"OUTCROP_INPUT_TEMPLATE": "{{ x "},
            },
        )
    assert (
        "OUTCROP_INPUT_TEMPLATE is not a valid Jinja2 template" in caught.value.response["Error"]["Message"]
    )


def test_metrics_carry_sagemaker_names_per_endpoint_and_variant(
    runtime: Any, endpoint: str, serving_server: ServingServer
) -> None:
    invoke(runtime, endpoint, {"inputs": "hi", "parameters": {"max_new_tokens": 1}})
    with pytest.raises(ClientError):
        invoke(runtime, endpoint, {"inputs": ""})
    text = httpx.get(serving_server.url + "/metrics").text
    labels = f'EndpointName="{endpoint}",InferenceComponentName="",VariantName="AllTraffic"'
    for name in (
        "outcrop_sagemaker_Invocations_total",
        "outcrop_sagemaker_Invocation4XXErrors_total",
        "outcrop_sagemaker_ModelLatency_seconds_count",
        "outcrop_sagemaker_OverheadLatency_seconds_count",
    ):
        assert f"{name}{{{labels}}}" in text, name


def test_streaming_an_unknown_endpoint_is_a_validation_error_before_the_stream(runtime: Any) -> None:
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint_with_response_stream(EndpointName="nowhere", Body=b'{"inputs": "x"}')
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint nowhere of account" in caught.value.response["Error"]["Message"]


def test_streaming_a_list_of_inputs_is_refused(runtime: Any, endpoint: str) -> None:
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint_with_response_stream(EndpointName=endpoint, Body=b'{"inputs": ["a", "b"]}')
    assert "takes one input" in caught.value.response["Error"]["Message"]


def test_max_concurrency_admits_a_serverless_variants_calls(
    sm: Any, runtime: Any, serving_server: ServingServer
) -> None:
    sm.create_model(ModelName="rt-sls-model", PrimaryContainer={"ModelDataUrl": serving_server.chat})
    sm.create_endpoint_config(
        EndpointConfigName="rt-sls-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "rt-sls-model",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="rt-sls", EndpointConfigName="rt-sls-config")
    assert wait_for_endpoint(sm, "rt-sls")["EndpointStatus"] == "InService"
    answer, response = invoke(runtime, "rt-sls", {"inputs": "hi", "parameters": {"max_new_tokens": 2}})
    assert response["InvokedProductionVariant"] == "AllTraffic" and answer[0]["generated_text"] is not None


def test_a_key_allowed_one_endpoint_invokes_it_and_nothing_else(
    sm: Any, endpoint: str, serving_server: ServingServer
) -> None:
    from tests.auth.test_auth_e2e import client_as
    from tests.conftest import api

    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sagemaker:InvokeEndpoint*"],
                "Resource": [f"arn:aws:sagemaker:*:*:endpoint/{endpoint}"],
            }
        ]
    }
    key = api.post(f"{serving_server.url}/outcrop/keys", json={"name": "sm-app", "policy": policy}).json()
    runtime = client_as("sagemaker-runtime", serving_server.url, key["accessKeyId"], key["secretAccessKey"])
    answer, _ = invoke(runtime, endpoint, {"inputs": "hi", "parameters": {"max_new_tokens": 1}})
    assert isinstance(answer[0]["generated_text"], str)
    with pytest.raises(
        ClientError, match="not authorized to perform: sagemaker:InvokeEndpoint on resource: "
    ):
        invoke(runtime, "someone-elses", {"inputs": "hi"})
    control = client_as("sagemaker", serving_server.url, key["accessKeyId"], key["secretAccessKey"])
    with pytest.raises(ClientError, match="sagemaker:DeleteEndpoint") as caught:
        control.delete_endpoint(EndpointName=endpoint)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
