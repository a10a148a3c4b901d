"""Typed inputs of the SageMaker control plane (botocore ``sagemaker`` 2017-07-24, JSON 1.1).

Only the members Outcrop acts on or records are declared; the others (VpcConfig, DataCaptureConfig,
...) are accepted and ignored, as a SageMaker feature this server has no use for. Field names keep
SageMaker's PascalCase so a validation error names the member the caller sent. :func:`page` is the
List* operations' shared paging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from outcrop.errors import InvalidRequestError

# SageMaker's own bounds (the service model's min/max for these members).
MAX_VARIANTS = 10
MAX_SERVERLESS_CONCURRENCY = 200
NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore")


class S3ModelDataSourceShape(_Input):
    S3Uri: StrictStr = Field(..., min_length=1, max_length=1024)
    S3DataType: StrictStr | None = None
    CompressionType: StrictStr | None = None


class ModelDataSourceShape(_Input):
    S3DataSource: S3ModelDataSourceShape | None = None


class ContainerDefinition(_Input):
    ContainerHostname: StrictStr | None = None
    Image: StrictStr | None = None
    Mode: Literal["SingleModel", "MultiModel"] | None = None
    ModelDataUrl: StrictStr | None = Field(None, max_length=1024)
    ModelDataSource: ModelDataSourceShape | None = None
    Environment: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class Tag(_Input):
    Key: StrictStr
    Value: StrictStr


class CreateModelInput(_Input):
    ModelName: StrictStr = Field(..., pattern=NAME_PATTERN)
    PrimaryContainer: ContainerDefinition | None = None
    Containers: list[ContainerDefinition] | None = Field(None, max_length=15)
    ExecutionRoleArn: StrictStr | None = None
    Tags: list[Tag] = Field(default_factory=list)
    EnableNetworkIsolation: bool | None = None


class ServerlessConfigShape(_Input):
    MemorySizeInMB: StrictInt = Field(..., ge=1024, le=6144)
    MaxConcurrency: StrictInt = Field(..., ge=1, le=MAX_SERVERLESS_CONCURRENCY)
    ProvisionedConcurrency: StrictInt | None = Field(None, ge=1, le=MAX_SERVERLESS_CONCURRENCY)


class ProductionVariant(_Input):
    VariantName: StrictStr = Field(..., pattern=NAME_PATTERN)
    ModelName: StrictStr | None = Field(None, pattern=NAME_PATTERN)
    InitialInstanceCount: StrictInt | None = Field(None, ge=1)
    InstanceType: StrictStr | None = None
    InitialVariantWeight: StrictFloat | StrictInt | None = Field(None, ge=0)
    ServerlessConfig: ServerlessConfigShape | None = None


class CreateEndpointConfigInput(_Input):
    EndpointConfigName: StrictStr = Field(..., pattern=NAME_PATTERN)
    ProductionVariants: list[ProductionVariant] = Field(..., min_length=1, max_length=MAX_VARIANTS)
    Tags: list[Tag] = Field(default_factory=list)


class CreateEndpointInput(_Input):
    EndpointName: StrictStr = Field(..., pattern=NAME_PATTERN)
    EndpointConfigName: StrictStr = Field(..., pattern=NAME_PATTERN)
    Tags: list[Tag] = Field(default_factory=list)


class UpdateEndpointInput(_Input):
    EndpointName: StrictStr = Field(..., pattern=NAME_PATTERN)
    EndpointConfigName: StrictStr = Field(..., pattern=NAME_PATTERN)


class ModelNameInput(_Input):
    ModelName: StrictStr = Field(..., min_length=1, max_length=63)


class EndpointConfigNameInput(_Input):
    EndpointConfigName: StrictStr = Field(..., min_length=1, max_length=63)


class EndpointNameInput(_Input):
    EndpointName: StrictStr = Field(..., min_length=1, max_length=63)


class ListInput(_Input):
    NameContains: StrictStr | None = None
    SortBy: Literal["Name", "CreationTime", "Status"] = "CreationTime"
    SortOrder: Literal["Ascending", "Descending"] = "Descending"
    MaxResults: StrictInt = Field(10, ge=1, le=100)
    NextToken: StrictStr | None = None
    StatusEquals: StrictStr | None = None


# ---------------------------------------------------------------------------- inference components

# InferenceComponentName's pattern (no consecutive-hyphen rule, unlike endpoint names).
COMPONENT_NAME_PATTERN = r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$"


class ComputeRequirements(_Input):
    NumberOfCpuCoresRequired: StrictFloat | StrictInt | None = Field(None, ge=0.25)
    NumberOfAcceleratorDevicesRequired: StrictFloat | StrictInt | None = Field(None, ge=1)
    MinMemoryRequiredInMb: StrictInt = Field(..., ge=128)
    MaxMemoryRequiredInMb: StrictInt | None = Field(None, ge=128)


class ComponentContainer(_Input):
    Image: StrictStr | None = Field(None, max_length=255)
    ArtifactUrl: StrictStr | None = Field(None, max_length=1024)
    Environment: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class ComponentStartupParameters(_Input):
    ModelDataDownloadTimeoutInSeconds: StrictInt | None = Field(None, ge=60, le=3600)
    ContainerStartupHealthCheckTimeoutInSeconds: StrictInt | None = Field(None, ge=60, le=3600)


class ComponentSpecification(_Input):
    ModelName: StrictStr | None = Field(None, pattern=COMPONENT_NAME_PATTERN, max_length=63)
    Container: ComponentContainer | None = None
    StartupParameters: ComponentStartupParameters | None = None
    ComputeResourceRequirements: ComputeRequirements | None = None
    BaseInferenceComponentName: StrictStr | None = None


class ComponentRuntimeConfig(_Input):
    CopyCount: StrictInt = Field(..., ge=0)


class CreateInferenceComponentInput(_Input):
    InferenceComponentName: StrictStr = Field(..., pattern=COMPONENT_NAME_PATTERN, max_length=63)
    EndpointName: StrictStr = Field(..., pattern=NAME_PATTERN)
    VariantName: StrictStr | None = Field(None, pattern=NAME_PATTERN)
    Specification: ComponentSpecification | None = None
    Specifications: list[ComponentSpecification] | None = None
    RuntimeConfig: ComponentRuntimeConfig | None = None
    Tags: list[Tag] = Field(default_factory=list)


class UpdateInferenceComponentInput(_Input):
    InferenceComponentName: StrictStr = Field(..., min_length=1, max_length=63)
    Specification: ComponentSpecification | None = None
    Specifications: list[ComponentSpecification] | None = None
    RuntimeConfig: ComponentRuntimeConfig | None = None


class InferenceComponentNameInput(_Input):
    InferenceComponentName: StrictStr = Field(..., min_length=1, max_length=63)


class ListInferenceComponentsInput(ListInput):
    EndpointNameEquals: StrictStr | None = None
    VariantNameEquals: StrictStr | None = None


def page(
    items: list[dict[str, Any]],
    key: str,
    name_key: str,
    inp: ListInput,
    status_key: str = "EndpointStatus",
) -> dict[str, Any]:
    """SageMaker's List* paging: filter, sort, and an opaque NextToken (the offset)."""
    if inp.NameContains:
        needle = inp.NameContains.lower()
        items = [i for i in items if needle in i[name_key].lower()]
    sort_key: Callable[[dict[str, Any]], Any] = {
        "Name": lambda i: i[name_key],
        "Status": lambda i: i.get(status_key, ""),
    }.get(inp.SortBy, lambda i: i["CreationTime"])
    items.sort(key=sort_key, reverse=inp.SortOrder == "Descending")
    try:
        start = int(inp.NextToken or 0)
    except ValueError:
        raise InvalidRequestError(
            f"NextToken {inp.NextToken!r} is not one this server gave; start again without it.",
            param="NextToken",
        ) from None
    page = items[start : start + inp.MaxResults]
    out: dict[str, Any] = {key: page}
    if start + inp.MaxResults < len(items):
        out["NextToken"] = str(start + inp.MaxResults)
    return out
