"""Provisioned copies are pinned: an InService endpoint's InitialInstanceCount and a component's
CopyCount survive the idle autoscaler until the endpoint or component is deleted (null copies)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.registry.service import Registry
from outcrop.sagemaker import protocol as p
from outcrop.sagemaker.service import SageMakerService, parse
from outcrop.serving.service import Serving
from tests.serving.conftest import running
from tests.serving.test_service import eventually

pytestmark = pytest.mark.anyio

Config = Callable[..., OutcropConfig]
IDLE = {"serving.defaults.idle_seconds_before_scale_down": 0.3}


def names(serving: Serving) -> list[str]:
    return sorted(c.model_name for c in serving.copies())


@pytest.fixture
async def sagemaker(
    serving_config: Config, serving_registry: Registry
) -> AsyncIterator[tuple[SageMakerService, Serving]]:
    config = serving_config(**IDLE)
    async with running(config, serving_registry) as serving:
        svc = SageMakerService(config, serving_registry.db, serving_registry, serving)
        await svc.start()
        try:
            yield svc, serving
        finally:
            await svc.stop()


def model(svc: SageMakerService, name: str, imported: str) -> None:
    svc.create_model(
        parse(p.CreateModelInput, {"ModelName": name, "PrimaryContainer": {"ModelDataUrl": imported}})
    )


def endpoint(svc: SageMakerService, name: str, variant: dict[str, Any]) -> None:
    svc.create_endpoint_config(
        parse(
            p.CreateEndpointConfigInput,
            {
                "EndpointConfigName": f"{name}-config",
                "ProductionVariants": [{"VariantName": "AllTraffic", **variant}],
            },
        )
    )
    svc.create_endpoint(
        parse(p.CreateEndpointInput, {"EndpointName": name, "EndpointConfigName": f"{name}-config"})
    )


async def in_service(describe: Callable[[], dict[str, Any]], key: str) -> None:
    await eventually(lambda: describe()[key] not in ("Creating", "Updating"), 60)
    assert describe()[key] == "InService", describe().get("FailureReason")


async def test_initial_instance_count_copies_outlive_idle_windows_until_the_endpoint_is_deleted(
    sagemaker: tuple[SageMakerService, Serving],
) -> None:
    svc, serving = sagemaker
    model(svc, "pin-a-model", "alpha")
    endpoint(svc, "pin-a", {"ModelName": "pin-a-model", "InitialInstanceCount": 1})
    await in_service(lambda: svc.describe_endpoint("pin-a"), "EndpointStatus")
    assert svc.pinned() == {"sagemaker:endpoint/pin-a/AllTraffic": ("alpha", 1)}
    await asyncio.sleep(1.5)  # five idle windows
    assert names(serving) == ["alpha"]
    svc.delete_endpoint("pin-a")
    await eventually(lambda: names(serving) == [])
    assert svc.pinned() == {}


async def test_copy_count_copies_outlive_idle_windows_until_the_component_is_deleted(
    sagemaker: tuple[SageMakerService, Serving],
) -> None:
    svc, serving = sagemaker
    model(svc, "pin-b-model", "beta")
    endpoint(svc, "pin-b", {"InstanceType": "ml.g5.xlarge", "InitialInstanceCount": 1})
    await in_service(lambda: svc.describe_endpoint("pin-b"), "EndpointStatus")
    svc.components.create(
        parse(
            p.CreateInferenceComponentInput,
            {
                "InferenceComponentName": "pin-b-ic",
                "EndpointName": "pin-b",
                "Specification": {"ModelName": "pin-b-model"},
                "RuntimeConfig": {"CopyCount": 1},
            },
        )
    )
    await in_service(lambda: svc.components.describe("pin-b-ic"), "InferenceComponentStatus")
    assert svc.components.describe("pin-b-ic")["RuntimeConfig"]["CurrentCopyCount"] == 1
    await asyncio.sleep(1.5)
    assert names(serving) == ["beta"]
    svc.components.delete("pin-b-ic")
    await eventually(lambda: names(serving) == [])


async def test_a_serverless_variant_without_provisioned_concurrency_is_not_pinned_and_scales_to_zero(
    sagemaker: tuple[SageMakerService, Serving],
) -> None:
    svc, serving = sagemaker
    model(svc, "pin-c-model", "gamma")
    endpoint(
        svc,
        "pin-c",
        {"ModelName": "pin-c-model", "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2}},
    )
    await in_service(lambda: svc.describe_endpoint("pin-c"), "EndpointStatus")
    assert svc.pinned() == {}
    assert names(serving) == []


async def test_an_endpoint_deleted_by_another_gateway_releases_its_pin_at_the_next_sync(
    sagemaker: tuple[SageMakerService, Serving],
) -> None:
    svc, serving = sagemaker
    model(svc, "pin-d-model", "alpha")
    endpoint(svc, "pin-d", {"ModelName": "pin-d-model", "InitialInstanceCount": 1})
    await in_service(lambda: svc.describe_endpoint("pin-d"), "EndpointStatus")
    assert names(serving) == ["alpha"]
    svc.store.delete_endpoint("pin-d")  # what another gateway's DeleteEndpoint leaves in the store
    await svc.sync_pins()
    assert svc.pinned() == {}
    await eventually(lambda: names(serving) == [])
