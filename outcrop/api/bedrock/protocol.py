"""Wire messages of the Bedrock control plane (shapes of botocore's bedrock 2023-04-20 model)."""

from __future__ import annotations

import datetime as dt
import enum
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from outcrop.errors import InvalidRequestError
from outcrop.store.imports import ImportJobStatus

E = TypeVar("E", bound=enum.Enum)

# A Custom Model Unit is Bedrock's abstract unit of hardware per copy; Bedrock quotes
# Llama-3.1-8B (about 16 GB of bf16 weights) at 2 CMU, so one CMU is taken as 8 GiB.
BYTES_PER_CUSTOM_MODEL_UNIT = 8 * 1024**3
CUSTOM_MODEL_UNITS_VERSION = "v1.0"


class _Wire(BaseModel):
    # Unknown members are ignored, as AWS services do, so newer SDKs keep working.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Tag(_Wire):
    key: str = Field(min_length=1, max_length=128)
    value: str = Field(max_length=256)


class S3DataSource(_Wire):
    s3Uri: str = Field(min_length=1, max_length=1024)


class ModelDataSource(_Wire):
    s3DataSource: S3DataSource


class VpcConfig(_Wire):
    subnetIds: list[str] = Field(min_length=1, max_length=16)
    securityGroupIds: list[str] = Field(min_length=1, max_length=5)


class CreateModelImportJobRequest(_Wire):
    jobName: str
    importedModelName: str
    roleArn: str | None = None
    modelDataSource: ModelDataSource
    jobTags: list[Tag] = Field(default_factory=list, max_length=200)
    importedModelTags: list[Tag] = Field(default_factory=list, max_length=200)
    clientRequestToken: str | None = Field(None, min_length=1, max_length=256)
    vpcConfig: VpcConfig | None = None
    importedModelKmsKeyId: str | None = Field(None, min_length=1, max_length=2048)


def iso8601(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: str | None, param: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"1 validation error detected: Value {value!r} at '{param}' is not an ISO 8601 timestamp "
            "(for example 2026-01-31T12:00:00Z).",
            param=param,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_enum(value: str | None, enum_cls: type[E], param: str = "statusEquals") -> E | None:
    """A status query parameter as its enum, or the ValidationException listing the allowed values."""
    if value is None:
        return None
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(str(s.value) for s in enum_cls)
        raise InvalidRequestError(
            f"1 validation error detected: Value {value!r} at '{param}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{allowed}].",
            param=param,
        ) from None


def parse_status(value: str | None) -> ImportJobStatus | None:
    return parse_enum(value, ImportJobStatus)


def parse_sort(sort_by: str | None, sort_order: str | None) -> bool:
    """Returns True for ascending. Bedrock's only sort key is CreationTime; default is descending."""
    if sort_by is not None and sort_by != "CreationTime":
        raise InvalidRequestError(
            f"1 validation error detected: Value {sort_by!r} at 'sortBy' failed to satisfy constraint: "
            "Member must satisfy enum value set: [CreationTime].",
            param="sortBy",
        )
    if sort_order not in (None, "Ascending", "Descending"):
        raise InvalidRequestError(
            f"1 validation error detected: Value {sort_order!r} at 'sortOrder' failed to satisfy constraint: "
            "Member must satisfy enum value set: [Ascending, Descending].",
            param="sortOrder",
        )
    return sort_order == "Ascending"


def parse_max_results(value: str | None) -> int:
    if value is None:
        return 1000
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 1000:
        raise InvalidRequestError(
            f"1 validation error detected: Value {value!r} at 'maxResults' failed to satisfy constraint: "
            "Member must be an integer from 1 to 1000.",
            param="maxResults",
        )
    return number


def custom_model_units(memory_estimate_bytes: int) -> dict[str, Any]:
    units = max(1, math.ceil(memory_estimate_bytes / BYTES_PER_CUSTOM_MODEL_UNIT))
    return {"customModelUnitsPerModelCopy": units, "customModelUnitsVersion": CUSTOM_MODEL_UNITS_VERSION}


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}
