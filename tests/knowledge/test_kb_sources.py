"""Data sources: a folder inside the allowed roots or a bucket (moto in server mode), with Bedrock's
inclusion prefix, sidecars, hidden files, links out of the roots, and clear refusals."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.knowledge.sources import check_source, open_source


def s3(bucket_arn: str, prefix: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"bucketArn": bucket_arn}
    if prefix is not None:
        conf["inclusionPrefixes"] = [prefix]
    return {"type": "S3", "s3Configuration": conf}


@pytest.fixture
def config(tmp_path: Path) -> OutcropConfig:
    return OutcropConfig(data_dir=tmp_path / "data", registry={"allowed_roots": [tmp_path / "root"]})


def test_a_folder_lists_documents_with_their_sidecars_and_skips_hidden_files(
    tmp_path: Path, config: OutcropConfig
) -> None:
    root = tmp_path / "root" / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "a.md").write_text("# A\n\nhello world.")
    (root / "guides" / "a.md.metadata.json").write_text(json.dumps({"metadataAttributes": {"team": "red"}}))
    (root / "b.txt").write_text("quick brown fox.")
    (root / ".hidden.txt").write_text("secret")
    (root / ".git").mkdir()
    (root / ".git" / "config.txt").write_text("nope")
    (tmp_path / "outside.txt").write_text("outside the roots")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")

    source = open_source(s3(root.as_uri()), config)
    docs, sidecars = source.list_documents()
    assert sidecars == 1
    assert [d.uri for d in docs] == [(root / n).as_uri() for n in ("b.txt", "guides/a.md", "link.txt")]
    a = docs[1]
    loaded = source.load(a, max_bytes=10_000)
    assert loaded.parsed is not None and "hello world" in loaded.parsed.text
    assert loaded.metadata == {"team": "red"} and loaded.metadata_hash is not None
    link = source.load(docs[2], max_bytes=10_000)
    assert link.error is not None and "outside the folders" in link.error
    too_big = source.load(docs[0], max_bytes=3)
    assert too_big.error is not None and "limit" in too_big.error

    guides = open_source(s3(str(root), prefix="guides/"), config)
    assert [d.uri for d in guides.list_documents()[0]] == [(root / "guides" / "a.md").as_uri()]


def test_refusals_name_the_value_and_the_fix(tmp_path: Path, config: OutcropConfig) -> None:
    (tmp_path / "root").mkdir()
    cases = [
        ({"type": "WEB"}, "S3-type data sources"),
        ({"type": "S3"}, "bucketArn is required"),
        (s3("ftp://host/x"), "not a location Outcrop can read"),
        (s3("file:///etc"), "outside the folders"),
        (s3("arn:aws:s3:::"), "not a bucket ARN"),
        (s3(str(tmp_path / "root"), prefix="../up"), "'..'"),
        (
            {
                "type": "S3",
                "s3Configuration": {"bucketArn": "arn:aws:s3:::b", "inclusionPrefixes": ["a", "b"]},
            },
            "at most one",
        ),
    ]
    for configuration, words in cases:
        with pytest.raises(InvalidRequestError, match=words):
            open_source(configuration, config)
    with pytest.raises(InvalidRequestError, match="no such folder"):
        check_source(s3(str(tmp_path / "root" / "missing")), config)


def test_a_bucket_is_read_through_the_servers_s3_settings(s3_endpoint: str, tmp_path: Path) -> None:
    import boto3

    config = OutcropConfig(
        data_dir=tmp_path / "data",
        s3={
            "endpoint_url": s3_endpoint,
            "access_key_id": "k",
            "secret_access_key": "s",
            "region": "us-east-1",
        },
    )
    bucket = f"docs-{uuid.uuid4().hex[:8]}"
    client: Any = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="kb/one.txt", Body=b"hello world.")
    client.put_object(
        Bucket=bucket, Key="kb/one.txt.metadata.json", Body=b'{"metadataAttributes": {"year": 2024}}'
    )
    client.put_object(
        Bucket=bucket, Key="kb/two.html", Body=b"<html><body><p>quick brown fox</p></body></html>"
    )
    client.put_object(Bucket=bucket, Key="kb/.hidden", Body=b"x")
    client.put_object(Bucket=bucket, Key="other/three.txt", Body=b"not under the prefix")

    source = open_source(s3(f"arn:aws:s3:::{bucket}", prefix="kb/"), config)
    docs, sidecars = source.list_documents()
    assert [d.uri for d in docs] == [f"s3://{bucket}/kb/one.txt", f"s3://{bucket}/kb/two.html"]
    assert sidecars == 1
    one = source.load(docs[0], max_bytes=10_000)
    assert one.parsed is not None and one.parsed.text == "hello world." and one.metadata == {"year": 2024}
    two = source.load(docs[1], max_bytes=10_000)
    assert two.parsed is not None and "quick brown fox" in two.parsed.text
    before = source.hashes(docs[0])[0]
    client.put_object(Bucket=bucket, Key="kb/one.txt", Body=b"changed words.")
    again, _ = source.list_documents()
    assert source.hashes(again[0])[0] != before  # the ETag is the content hash the re-sync compares
    same = open_source(s3(f"s3://{bucket}/kb/"), config)
    assert [d.uri for d in same.list_documents()[0]] == [d.uri for d in again]
