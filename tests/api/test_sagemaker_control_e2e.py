"""The boto3 ``sagemaker`` client, unchanged, creating models, endpoint configs and endpoints over
imported models; every answer checked against botocore's output shapes."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.sagemaker_shapes import check_shape, record_raw_bodies
from tests.conftest import ServingServer, boto3_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sm(serving_server: ServingServer) -> Any:
    client = boto3_client("sagemaker", serving_server.url)
    client.raw = record_raw_bodies(client)
    return client


def wait_for_endpoint(sm: Any, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        endpoint: dict[str, Any] = sm.describe_endpoint(EndpointName=name)
        if endpoint["EndpointStatus"] not in ("Creating", "Updating"):
            return endpoint
        time.sleep(0.1)
    raise AssertionError(f"endpoint {name} still deploying after {timeout} s")


def make_endpoint(sm: Any, name: str, model_source: str, **variant: Any) -> dict[str, Any]:
    sm.create_model(
        ModelName=f"{name}-model",
        PrimaryContainer={"Image": "tgi", "ModelDataUrl": model_source},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMaker",
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.g5.xlarge",
                **variant,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    return wait_for_endpoint(sm, name)


def test_an_imported_model_becomes_an_in_service_endpoint_with_valid_shapes(
    sm: Any, serving_server: ServingServer
) -> None:
    endpoint = make_endpoint(sm, "ctl-basic", serving_server.chat_arn)
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert endpoint["EndpointArn"].endswith(":endpoint/ctl-basic")
    check_shape(sm, "DescribeEndpoint", sm.raw["DescribeEndpoint"])
    model = sm.describe_model(ModelName="ctl-basic-model")
    assert model["PrimaryContainer"]["ModelDataUrl"] == serving_server.chat_arn
    check_shape(sm, "DescribeModel", sm.raw["DescribeModel"])
    config = sm.describe_endpoint_config(EndpointConfigName="ctl-basic-config")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    check_shape(sm, "DescribeEndpointConfig", sm.raw["DescribeEndpointConfig"])
    for op, call in (
        ("ListModels", sm.list_models),
        ("ListEndpointConfigs", sm.list_endpoint_configs),
        ("ListEndpoints", sm.list_endpoints),
    ):
        call(NameContains="ctl-basic")
        check_shape(sm, op, sm.raw[op])
    assert [e["EndpointName"] for e in sm.list_endpoints(NameContains="ctl-basic")["Endpoints"]] == [
        "ctl-basic"
    ]


def test_boto3_waiter_sees_the_endpoint_in_service(sm: Any, serving_server: ServingServer) -> None:
    sm.create_model(ModelName="ctl-wait-model", PrimaryContainer={"ModelDataUrl": serving_server.chat})
    sm.create_endpoint_config(
        EndpointConfigName="ctl-wait-config",
        ProductionVariants=[
            {
                "VariantName": "v1",
                "ModelName": "ctl-wait-model",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 4},
            }
        ],
    )
    sm.create_endpoint(EndpointName="ctl-wait", EndpointConfigName="ctl-wait-config")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="ctl-wait", WaiterConfig={"Delay": 1})
    variant = sm.describe_endpoint(EndpointName="ctl-wait")["ProductionVariants"][0]
    assert variant["CurrentServerlessConfig"]["MaxConcurrency"] == 4


def test_an_unknown_imported_model_is_a_validation_error_naming_it(sm: Any) -> None:
    with pytest.raises(ClientError) as caught:
        sm.create_model(ModelName="ctl-bad", PrimaryContainer={"ModelDataUrl": "no-such-model"})
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "'no-such-model' names no imported model" in caught.value.response["Error"]["Message"]


def test_a_config_naming_an_unknown_model_is_refused(sm: Any) -> None:
    with pytest.raises(ClientError) as caught:
        sm.create_endpoint_config(
            EndpointConfigName="ctl-orphan",
            ProductionVariants=[{"VariantName": "a", "ModelName": "ghost", "InitialInstanceCount": 1}],
        )
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert 'Could not find model "arn:aws:sagemaker:' in caught.value.response["Error"]["Message"]


def test_describing_an_unknown_endpoint_says_so(sm: Any) -> None:
    with pytest.raises(ClientError) as caught:
        sm.describe_endpoint(EndpointName="nowhere")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "Could not find endpoint" in caught.value.response["Error"]["Message"]


def test_creating_a_model_twice_is_refused(sm: Any, serving_server: ServingServer) -> None:
    sm.create_model(ModelName="ctl-twice", PrimaryContainer={"ModelDataUrl": serving_server.chat})
    with pytest.raises(ClientError) as caught:
        sm.create_model(ModelName="ctl-twice", PrimaryContainer={"ModelDataUrl": serving_server.chat})
    assert "Cannot create already existing model" in caught.value.response["Error"]["Message"]


def test_a_folder_that_is_not_imported_yet_is_imported_then_served(
    sm: Any, serving_server: ServingServer, tiny_model_cache: Callable[..., Path]
) -> None:
    folder = serving_server.server.import_root / "sm-folder"
    shutil.copytree(tiny_model_cache(family="mistral"), folder)
    endpoint = make_endpoint(sm, "ctl-folder", str(folder))
    assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")
    bedrock = boto3_client("bedrock", serving_server.url)
    assert bedrock.get_imported_model(modelIdentifier="ctl-folder-model")["modelName"] == "ctl-folder-model"


def test_a_folder_that_fails_its_import_fails_the_endpoint_with_the_reason(
    sm: Any, serving_server: ServingServer
) -> None:
    folder = serving_server.server.import_root / "sm-not-a-model"
    folder.mkdir()
    (folder / "README.md").write_text("no weights here")
    endpoint = make_endpoint(sm, "ctl-broken", str(folder))
    assert endpoint["EndpointStatus"] == "Failed"
    assert "importing model 'ctl-broken-model'" in endpoint["FailureReason"]
    assert "config.json" in endpoint["FailureReason"]


def test_update_switches_config_and_delete_removes_everything(sm: Any, serving_server: ServingServer) -> None:
    make_endpoint(sm, "ctl-upd", serving_server.chat)
    sm.create_model(ModelName="ctl-upd-plain", PrimaryContainer={"ModelDataUrl": serving_server.plain})
    sm.create_endpoint_config(
        EndpointConfigName="ctl-upd-config2",
        ProductionVariants=[{"VariantName": "B", "ModelName": "ctl-upd-plain", "InitialInstanceCount": 1}],
    )
    sm.update_endpoint(EndpointName="ctl-upd", EndpointConfigName="ctl-upd-config2")
    endpoint = wait_for_endpoint(sm, "ctl-upd")
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["EndpointConfigName"] == "ctl-upd-config2"
    assert [v["VariantName"] for v in endpoint["ProductionVariants"]] == ["B"]
    sm.delete_endpoint(EndpointName="ctl-upd")
    sm.delete_endpoint_config(EndpointConfigName="ctl-upd-config")
    sm.delete_model(ModelName="ctl-upd-model")
    assert sm.list_endpoints(NameContains="ctl-upd")["Endpoints"] == []
    with pytest.raises(ClientError):
        sm.describe_model(ModelName="ctl-upd-model")


def test_an_unknown_operation_names_the_ones_offered(serving_server: ServingServer) -> None:
    import httpx

    response = httpx.post(
        serving_server.url + "/",
        headers={"X-Amz-Target": "SageMaker.CreateTrainingJob", "Content-Type": "application/x-amz-json-1.1"},
        content=b"{}",
    )
    # Unsigned: the guard answers first, in SageMaker's dialect.
    assert response.headers["x-amzn-ErrorType"].startswith(
        ("UnrecognizedClientException", "ValidationException")
    )
    assert "__type" in response.json()
