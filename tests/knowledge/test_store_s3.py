"""The vector store on S3-compatible storage (moto in server mode on loopback): the scale-out
choice, where several gateways open the same ``s3://`` store and see each other's writes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from outcrop.config import S3Config
from outcrop.knowledge.store import open_store, s3_storage_options
from outcrop.knowledge.types import Chunk

DIM = 8


@pytest.fixture
def s3_config(s3_endpoint: str) -> S3Config:
    return S3Config(
        endpoint_url=s3_endpoint,
        access_key_id="outcrop-test",
        secret_access_key="outcrop-test-secret",
        region="us-east-1",
    )


@pytest.fixture
def bucket(s3_config: S3Config) -> str:
    import boto3

    name = f"vectors-{uuid.uuid4().hex[:8]}"
    client: Any = boto3.client(
        "s3",
        endpoint_url=s3_config.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3_config.access_key_id,
        aws_secret_access_key=s3_config.secret_access_key,
    )
    client.create_bucket(Bucket=name)
    return name


def _chunk(i: int) -> Chunk:
    vector = [0.0] * DIM
    vector[i % DIM] = 1.0
    return Chunk(f"c{i}", "DS1", f"s3://docs/doc{i}.txt", f"chunk number {i}", vector, {"n": i})


def test_two_gateways_share_one_store_on_s3(s3_config: S3Config, bucket: str) -> None:
    options = s3_storage_options(s3_config)
    assert options["allow_http"] == "true" and options["aws_endpoint"] == s3_config.endpoint_url
    writer = open_store(f"s3://{bucket}/knowledge", options)
    reader = open_store(f"s3://{bucket}/knowledge", options)
    writer.create("KB1", DIM)
    writer.upsert("KB1", [_chunk(i) for i in range(6)])
    assert reader.count("KB1") == 6
    hits = reader.search("KB1", vector=_chunk(3).vector, text="chunk number 3", k=2)
    assert hits[0].chunk_id in {"c3"} and hits[0].source_uri == "s3://docs/doc3.txt"
    # A later write by one gateway is seen by the other's next read.
    writer.upsert("KB1", [_chunk(6)])
    assert reader.count("KB1") == 7
    assert reader.delete_documents("KB1", "DS1", ["s3://docs/doc6.txt"]) == 1
    assert writer.count("KB1") == 6


def test_options_follow_the_servers_s3_section() -> None:
    assert s3_storage_options(S3Config()) == {}
    secure = s3_storage_options(S3Config(endpoint_url="https://s3.example.com", region="eu-west-1"))
    assert secure == {"aws_endpoint": "https://s3.example.com", "aws_region": "eu-west-1"}
