"""An import whose chat template fails on every conversation ends Failed through boto3, naming the file."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, boto3_client, wait_for_job

pytestmark = pytest.mark.e2e


def test_import_with_a_template_that_raises_fails_naming_the_file_and_the_error(
    shared_server: ServerProcess, tiny_model_cache: Callable[..., Path]
) -> None:
    folder = shared_server.import_root / f"raising-{uuid.uuid4().hex[:6]}"
    shutil.copytree(tiny_model_cache(family="llama"), folder)
    (folder / "chat_template.jinja").write_text("{{ raise_exception('this model has no chat format') }}")
    bedrock = boto3_client("bedrock", shared_server.url)
    arn = bedrock.create_model_import_job(
        jobName=folder.name,
        importedModelName=folder.name,
        roleArn="arn:aws:iam::123456789012:role/Importer",
        modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
    )["jobArn"]
    job = wait_for_job(bedrock, arn)
    assert job["status"] == "Failed"
    message = job["failureMessage"]
    assert "chat_template.jinja fails on a sample conversation" in message
    assert "this model has no chat format" in message and "remove it" in message
