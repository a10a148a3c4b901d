"""Inference components through boto3 ``sagemaker`` / ``sagemaker-runtime``, unchanged: two imported
models share one endpoint, each component with its own copies; shapes checked against botocore's models."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.sagemaker_shapes import check_shape, record_raw_bodies
from tests.api.test_sagemaker_control_e2e import wait_for_endpoint
from tests.conftest import ServingServer, boto3_client

pytestmark = pytest.mark.e2e

BODY = {"inputs": "The quick brown", "parameters": {"max_new_tokens": 4}}


@pytest.fixture(scope="module")
def sm(serving_server: ServingServer) -> Any:
    client = boto3_client("sagemaker", serving_server.url)
    client.raw = record_raw_bodies(client)
    return client


@pytest.fixture(scope="module")
def runtime(serving_server: ServingServer) -> Any:
    return boto3_client("sagemaker-runtime", serving_server.url)


def wait_for_component(sm: Any, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        component: dict[str, Any] = sm.describe_inference_component(InferenceComponentName=name)
        if component["InferenceComponentStatus"] not in ("Creating", "Updating"):
            return component
        time.sleep(0.1)
    raise AssertionError(f"inference component {name} still deploying after {timeout} s")


def host_endpoint(sm: Any, name: str) -> None:
    """An endpoint for inference components: its variant names no model, as SageMaker's does."""
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMaker",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "InstanceType": "ml.g5.12xlarge", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    assert wait_for_endpoint(sm, name)["EndpointStatus"] == "InService"


def add_component(sm: Any, endpoint: str, name: str, imported: str, copies: int = 1) -> dict[str, Any]:
    sm.create_model(ModelName=f"{name}-model", PrimaryContainer={"ModelDataUrl": imported})
    arn = sm.create_inference_component(
        InferenceComponentName=name,
        EndpointName=endpoint,
        VariantName="AllTraffic",
        Specification={
            "ModelName": f"{name}-model",
            "ComputeResourceRequirements": {
                "NumberOfAcceleratorDevicesRequired": 1,
                "MinMemoryRequiredInMb": 1024,
            },
        },
        RuntimeConfig={"CopyCount": copies},
    )["InferenceComponentArn"]
    assert arn.endswith(f":inference-component/{name}")
    return wait_for_component(sm, name)


@pytest.fixture(scope="module")
def shared(sm: Any, serving_server: ServingServer) -> str:
    host_endpoint(sm, "ic-shared")
    for component, imported in (("ic-chat", serving_server.chat), ("ic-plain", serving_server.plain)):
        assert add_component(sm, "ic-shared", component, imported)["InferenceComponentStatus"] == "InService"
    return "ic-shared"


def invoke(runtime: Any, endpoint: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    response = runtime.invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps(BODY), ContentType="application/json", **kwargs
    )
    return json.loads(response["Body"].read()), response


def test_two_models_share_an_endpoint_and_each_call_names_its_component(
    runtime: Any, shared: str, serving_server: ServingServer
) -> None:
    chat, response = invoke(runtime, shared, InferenceComponentName="ic-chat")
    plain, _ = invoke(runtime, shared, InferenceComponentName="ic-plain")
    assert isinstance(chat[0]["generated_text"], str) and isinstance(plain[0]["generated_text"], str)
    assert response["InvokedProductionVariant"] == "AllTraffic"
    # The same answer as the imported model's own endpoint-less call would give (greedy).
    assert invoke(runtime, shared, InferenceComponentName="ic-chat")[0] == chat


def test_describe_and_list_answer_botocores_shapes(sm: Any, shared: str) -> None:
    component = sm.describe_inference_component(InferenceComponentName="ic-chat")
    check_shape(sm, "DescribeInferenceComponent", sm.raw["DescribeInferenceComponent"])
    assert component["EndpointName"] == shared and component["VariantName"] == "AllTraffic"
    assert component["Specification"]["ModelName"] == "ic-chat-model"
    assert component["Specification"]["ComputeResourceRequirements"]["MinMemoryRequiredInMb"] == 1024
    assert component["RuntimeConfig"]["DesiredCopyCount"] == 1
    assert component["RuntimeConfig"]["CurrentCopyCount"] >= 1
    listed = sm.list_inference_components(EndpointNameEquals=shared, SortBy="Name", SortOrder="Ascending")
    check_shape(sm, "ListInferenceComponents", sm.raw["ListInferenceComponents"])
    assert [c["InferenceComponentName"] for c in listed["InferenceComponents"]] == ["ic-chat", "ic-plain"]
    assert sm.list_inference_components(EndpointNameEquals="ic-nowhere")["InferenceComponents"] == []


def test_invoking_without_a_component_is_sagemakers_validation_error(runtime: Any, shared: str) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(runtime, shared)
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"].startswith("Inference Component Name header is required for endpoints")


def test_a_component_of_another_endpoint_or_none_is_a_validation_error(runtime: Any, shared: str) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(runtime, shared, InferenceComponentName="ic-ghost")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert (
        "Inference component ic-ghost is not on endpoint ic-shared"
        in caught.value.response["Error"]["Message"]
    )
    with pytest.raises(ClientError) as caught:
        invoke(runtime, "ic-no-endpoint", InferenceComponentName="ic-chat")
    assert "Endpoint ic-no-endpoint of account" in caught.value.response["Error"]["Message"]


def test_a_component_streams_tgi_token_lines(runtime: Any, shared: str) -> None:
    whole, _ = invoke(runtime, shared, InferenceComponentName="ic-chat")
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=shared, InferenceComponentName="ic-chat", Body=json.dumps(BODY)
    )
    raw = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"]).decode()
    events = [json.loads(line[len("data:") :]) for line in raw.split("\n\n") if line.strip()]
    assert "".join(e["token"]["text"] for e in events) == whole[0]["generated_text"]


def test_update_changes_the_copy_count_and_delete_removes_the_component(
    sm: Any, runtime: Any, serving_server: ServingServer
) -> None:
    host_endpoint(sm, "ic-upd")
    add_component(sm, "ic-upd", "ic-upd-a", serving_server.chat, copies=0)
    assert (
        sm.describe_inference_component(InferenceComponentName="ic-upd-a")["RuntimeConfig"][
            "DesiredCopyCount"
        ]
        == 0
    )
    arn = sm.update_inference_component(InferenceComponentName="ic-upd-a", RuntimeConfig={"CopyCount": 1})[
        "InferenceComponentArn"
    ]
    assert arn.endswith(":inference-component/ic-upd-a")
    updated = wait_for_component(sm, "ic-upd-a")
    assert updated["InferenceComponentStatus"] == "InService"
    assert updated["RuntimeConfig"]["DesiredCopyCount"] == 1
    assert invoke(runtime, "ic-upd", InferenceComponentName="ic-upd-a")[0][0]["generated_text"] is not None
    sm.delete_inference_component(InferenceComponentName="ic-upd-a")
    with pytest.raises(ClientError) as caught:
        sm.describe_inference_component(InferenceComponentName="ic-upd-a")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert (
        'Could not find inference component "arn:aws:sagemaker:' in caught.value.response["Error"]["Message"]
    )
    with pytest.raises(ClientError):
        invoke(runtime, "ic-upd", InferenceComponentName="ic-upd-a")


def test_components_need_a_hosting_endpoint_a_model_and_a_copy_count(
    sm: Any, serving_server: ServingServer
) -> None:
    from tests.api.test_sagemaker_control_e2e import make_endpoint

    make_endpoint(sm, "ic-modelled", serving_server.chat)
    sm.create_model(ModelName="ic-bad-model", PrimaryContainer={"ModelDataUrl": serving_server.chat})
    cases = (
        (
            dict(
                EndpointName="ic-modelled",
                Specification={"ModelName": "ic-bad-model"},
                RuntimeConfig={"CopyCount": 1},
            ),
            "serves models through its variants, so it cannot host inference components",
        ),
        (
            dict(
                EndpointName="ic-shared",
                Specification={"ModelName": "ic-none"},
                RuntimeConfig={"CopyCount": 1},
            ),
            'Could not find model "arn:aws:sagemaker:',
        ),
        (
            dict(EndpointName="ic-shared", Specification={"ModelName": "ic-bad-model"}),
            "RuntimeConfig.CopyCount",
        ),
        (dict(EndpointName="ic-shared", RuntimeConfig={"CopyCount": 1}), "needs a Specification"),
        (
            dict(
                EndpointName="ic-shared",
                VariantName="Other",
                Specification={"ModelName": "ic-bad-model"},
                RuntimeConfig={"CopyCount": 1},
            ),
            "VariantName 'Other' is not a variant of endpoint 'ic-shared'",
        ),
    )
    for kwargs, named in cases:
        with pytest.raises(ClientError) as caught:
            sm.create_inference_component(InferenceComponentName="ic-bad", **kwargs)
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert named in caught.value.response["Error"]["Message"], kwargs


def test_a_config_mixing_model_and_component_variants_is_refused(
    sm: Any, serving_server: ServingServer
) -> None:
    sm.create_model(ModelName="ic-mix-model", PrimaryContainer={"ModelDataUrl": serving_server.chat})
    with pytest.raises(ClientError) as caught:
        sm.create_endpoint_config(
            EndpointConfigName="ic-mix",
            ProductionVariants=[
                {"VariantName": "A", "ModelName": "ic-mix-model", "InitialInstanceCount": 1},
                {"VariantName": "B", "InitialInstanceCount": 1, "InstanceType": "ml.g5.xlarge"},
            ],
        )
    assert (
        "mixes variants with a ModelName and variants without one"
        in caught.value.response["Error"]["Message"]
    )


def test_deleting_the_endpoint_deletes_its_components(sm: Any, serving_server: ServingServer) -> None:
    host_endpoint(sm, "ic-gone")
    add_component(sm, "ic-gone", "ic-gone-a", serving_server.plain, copies=0)
    sm.delete_endpoint(EndpointName="ic-gone")
    assert sm.list_inference_components(EndpointNameEquals="ic-gone")["InferenceComponents"] == []


def test_an_endpoint_with_components_cannot_move_to_a_config_of_model_variants(
    sm: Any, shared: str, serving_server: ServingServer
) -> None:
    sm.create_model(ModelName="ic-move-model", PrimaryContainer={"ModelDataUrl": serving_server.chat})
    sm.create_endpoint_config(
        EndpointConfigName="ic-move-config",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "ic-move-model", "InitialInstanceCount": 1}
        ],
    )
    with pytest.raises(ClientError) as caught:
        sm.update_endpoint(EndpointName=shared, EndpointConfigName="ic-move-config")
    assert "has inference components (ic-chat, ic-plain)" in caught.value.response["Error"]["Message"]


def test_metrics_are_labelled_with_the_inference_component(
    runtime: Any, shared: str, serving_server: ServingServer
) -> None:
    import httpx

    invoke(runtime, shared, InferenceComponentName="ic-plain")
    text = httpx.get(serving_server.url + "/metrics").text
    labels = f'EndpointName="{shared}",InferenceComponentName="ic-plain",VariantName="AllTraffic"'
    assert f"outcrop_sagemaker_Invocations_total{{{labels}}}" in text
    assert f"outcrop_sagemaker_ModelLatency_seconds_count{{{labels}}}" in text


def test_a_component_whose_import_fails_is_failed_with_the_reason(
    sm: Any, runtime: Any, serving_server: ServingServer
) -> None:
    folder = serving_server.server.import_root / "ic-not-a-model"
    folder.mkdir()
    (folder / "README.md").write_text("no weights here")
    host_endpoint(sm, "ic-fail")
    sm.create_model(ModelName="ic-fail-model", PrimaryContainer={"ModelDataUrl": str(folder)})
    sm.create_inference_component(
        InferenceComponentName="ic-fail-a",
        EndpointName="ic-fail",
        Specification={"ModelName": "ic-fail-model"},
        RuntimeConfig={"CopyCount": 1},
    )
    component = wait_for_component(sm, "ic-fail-a")
    assert component["InferenceComponentStatus"] == "Failed"
    assert "importing model 'ic-fail-model'" in component["FailureReason"]
    assert "config.json" in component["FailureReason"]
    check_shape(sm, "DescribeInferenceComponent", sm.raw["DescribeInferenceComponent"])
    with pytest.raises(ClientError) as caught:
        invoke(runtime, "ic-fail", InferenceComponentName="ic-fail-a")
    assert "Inference component ic-fail-a is Failed" in caught.value.response["Error"]["Message"]


def test_an_update_to_another_model_moves_the_component(
    sm: Any, runtime: Any, shared: str, serving_server: ServingServer
) -> None:
    host_endpoint(sm, "ic-swap")
    add_component(sm, "ic-swap", "ic-swap-a", serving_server.chat)
    chat, _ = invoke(runtime, "ic-swap", InferenceComponentName="ic-swap-a")
    sm.create_model(ModelName="ic-swap-plain", PrimaryContainer={"ModelDataUrl": serving_server.plain})
    sm.update_inference_component(
        InferenceComponentName="ic-swap-a", Specification={"ModelName": "ic-swap-plain"}
    )
    updated = wait_for_component(sm, "ic-swap-a")
    assert updated["InferenceComponentStatus"] == "InService"
    assert updated["Specification"]["ModelName"] == "ic-swap-plain"
    assert updated["RuntimeConfig"]["DesiredCopyCount"] == 1  # kept from before
    plain, _ = invoke(runtime, "ic-swap", InferenceComponentName="ic-swap-a")
    assert plain == invoke(runtime, shared, InferenceComponentName="ic-plain")[0]
    assert isinstance(chat[0]["generated_text"], str)
