"""Errors after a stream began reach boto3 (and the openai SDK's Responses stream) with their code and message (botocore's real event-stream parser):
a copy that dies mid-stream, through a real server whose copies are null copies started by the command launcher."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import botocore.exceptions
import openai
import pytest

from tests.conftest import TEST_API_KEY, ServerProcess, api, boto3_client, import_and_wait

pytestmark = pytest.mark.e2e


@pytest.fixture
def crashing(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path], tmp_path: Path
) -> tuple[ServerProcess, Path]:
    """A server with one imported model whose copy dies after its first streamed chunk once ``crash`` exists."""
    crash = tmp_path / "crash"
    template = (
        f"{sys.executable} -m outcrop.testing.nullcopy --port {{port}} --host {{host}} "
        f"--served-name {{served_name}} --model-dir {{model_dir}} --crash-file {crash} --crash-point mid_stream"
    )
    server = start_server(
        OUTCROP_SERVING__LAUNCHER="command",
        OUTCROP_SERVING__COMMAND_TEMPLATE=template,
        OUTCROP_SERVING__RESTART_BACKOFF_INITIAL_SECONDS="0.1",
    )
    import_and_wait(boto3_client("bedrock", server.url), tiny_model("llama"), "crashy")
    return server, crash


def _warm(server: ServerProcess) -> None:
    """A ready copy; after a crash the first tries meet the restart backoff (503) and are repeated."""
    for _ in range(100):
        r = api.post(f"{server.url}/outcrop/models/crashy/warm", json={"copies": 1}, timeout=60)
        if r.status_code != 503:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text


def test_a_copy_dying_mid_stream_reaches_boto3_as_model_stream_error_on_both_streaming_operations(
    crashing: tuple[ServerProcess, Path],
) -> None:
    server, crash = crashing
    # Retries ride out the replacement copy's start (ServiceUnavailable/ModelNotReady), as boto3 users do.
    runtime = boto3_client(
        "bedrock-runtime", server.url, retries={"mode": "standard", "total_max_attempts": 20}
    )

    _warm(server)
    crash.touch()
    response = runtime.invoke_model_with_response_stream(
        modelId="crashy", body=json.dumps({"prompt": "hi", "max_gen_len": 8})
    )
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        list(response["body"])
    error = info.value.response["Error"]
    assert error["Code"] == "modelStreamErrorException"
    assert "stopped while streaming" in error["Message"] and "crashy" in error["Message"]

    _warm(server)  # a replacement copy, for the second operation
    crash.touch()
    stream = runtime.converse_stream(
        modelId="crashy", messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        list(stream["stream"])
    error = info.value.response["Error"]
    assert error["Code"] == "modelStreamErrorException" and "stopped while streaming" in error["Message"]


def test_a_copy_dying_mid_stream_reaches_the_openai_sdk_as_a_responses_error_event(
    crashing: tuple[ServerProcess, Path],
) -> None:
    server, crash = crashing
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TEST_API_KEY, max_retries=0)
    _warm(server)
    crash.touch()
    seen = []
    with (
        pytest.raises(openai.APIError) as info,
        client.responses.stream(model="crashy", input="hi") as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert seen[0] == "response.created" and "response.completed" not in seen
    assert "stopped while streaming" in info.value.message
