"""`outcrop endpoints` lists SageMaker-compatible endpoints with their variants (a real process)."""

from __future__ import annotations

import json

import pytest

from tests.api.test_sagemaker_control_e2e import make_endpoint
from tests.cli.test_cli import outcrop
from tests.conftest import ServingServer, boto3_client

pytestmark = pytest.mark.e2e


def test_endpoints_lists_each_endpoint_with_its_variants(serving_server: ServingServer) -> None:
    sm = boto3_client("sagemaker", serving_server.url)
    make_endpoint(sm, "cli-listed", serving_server.chat)
    result = outcrop("endpoints", "--json", "--endpoint", serving_server.url)
    assert result.returncode == 0, result.stderr
    listed = {e["EndpointName"]: e for e in json.loads(result.stdout)}
    assert listed["cli-listed"]["EndpointStatus"] == "InService"
    assert listed["cli-listed"]["Variants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": "cli-listed-model",
            "Weight": 1.0,
            "Capacity": "1 x ml.g5.xlarge",
        }
    ]
    table = outcrop("endpoints", "--endpoint", serving_server.url)
    assert table.returncode == 0 and "cli-listed" in table.stdout and "InService" in table.stdout

    # After two invocations, the listing carries SageMaker's figures for the variant.
    runtime = boto3_client("sagemaker-runtime", serving_server.url)
    for _ in range(2):
        runtime.invoke_endpoint(
            EndpointName="cli-listed",
            ContentType="application/json",
            Body=json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 2}}),
        )
    result = outcrop("endpoints", "--json", "--endpoint", serving_server.url)
    (figures,) = {e["EndpointName"]: e for e in json.loads(result.stdout)}["cli-listed"]["Metrics"]
    assert figures["VariantName"] == "AllTraffic" and figures["Invocations"] == 2
    assert figures["Invocation4XXErrors"] == 0 and figures["ModelLatencyMs"] > 0
    table = outcrop("endpoints", "--endpoint", serving_server.url)
    assert "AllTraffic: 2 (0/0), model" in table.stdout


def test_endpoints_against_no_server_is_one_red_line() -> None:
    result = outcrop("endpoints", "--endpoint", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "No Outcrop server answers" in result.stderr and "Traceback" not in result.stderr


def test_endpoints_lists_inference_components_with_their_copies(serving_server: ServingServer) -> None:
    from tests.api.test_sagemaker_components_e2e import add_component, host_endpoint

    sm = boto3_client("sagemaker", serving_server.url)
    host_endpoint(sm, "cli-shared")
    add_component(sm, "cli-shared", "cli-ic", serving_server.plain)
    result = outcrop("endpoints", "--json", "--endpoint", serving_server.url)
    assert result.returncode == 0, result.stderr
    listed = {e["EndpointName"]: e for e in json.loads(result.stdout)}
    assert listed["cli-shared"]["Variants"][0]["ModelName"] is None
    (component,) = listed["cli-shared"]["Components"]
    assert component["InferenceComponentName"] == "cli-ic"
    assert component["ModelName"] == "cli-ic-model" and component["Status"] == "InService"
    assert component["DesiredCopyCount"] == 1 and component["CurrentCopyCount"] >= 1
    table = outcrop("endpoints", "--endpoint", serving_server.url)
    assert "component cli-ic: cli-ic-model" in table.stdout
