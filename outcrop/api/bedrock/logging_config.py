"""Bedrock control plane: model invocation logging configuration (Put/Get/Delete)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from outcrop.api.deps import Services, get_services, parse_body

router = APIRouter(tags=["bedrock control plane"])


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class S3Config(_Wire):
    bucketName: str = Field(min_length=3, max_length=63)
    keyPrefix: str | None = Field(None, max_length=1024)


class CloudWatchConfig(_Wire):
    logGroupName: str = Field(min_length=1, max_length=512)
    roleArn: str = Field(min_length=1, max_length=2048)
    largeDataDeliveryS3Config: S3Config | None = None


class LoggingConfig(_Wire):
    cloudWatchConfig: CloudWatchConfig | None = None
    s3Config: S3Config | None = None
    textDataDeliveryEnabled: bool | None = None
    imageDataDeliveryEnabled: bool | None = None
    embeddingDataDeliveryEnabled: bool | None = None
    videoDataDeliveryEnabled: bool | None = None
    audioDataDeliveryEnabled: bool | None = None


class PutLoggingRequest(_Wire):
    loggingConfig: LoggingConfig


@router.put("/logging/modelinvocations", summary="PutModelInvocationLoggingConfiguration")
async def put_logging(request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    body = await parse_body(request, PutLoggingRequest)
    services.invocation_log.put_config(body.loggingConfig.model_dump(exclude_none=True))
    return {}


@router.get("/logging/modelinvocations", summary="GetModelInvocationLoggingConfiguration")
def get_logging(services: Services = Depends(get_services)) -> dict[str, Any]:
    config = services.invocation_log.get_config()
    return {"loggingConfig": config} if config else {}


@router.delete("/logging/modelinvocations", summary="DeleteModelInvocationLoggingConfiguration")
def delete_logging(services: Services = Depends(get_services)) -> dict[str, Any]:
    services.invocation_log.delete_config()
    return {}
