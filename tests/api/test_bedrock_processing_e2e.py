"""Opt-in processing on the Bedrock runtime (outcrop/api/runtime/processing.py): an imported model's
import tags carry an input and an output template (or a handler), and boto3 InvokeModel gets what
the SageMaker endpoint proxy used to do, with no extra hop. An echo copy shows what reached it."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, boto3_client, server_env, wait_for_job

pytestmark = pytest.mark.e2e

INPUT = "Question: {{ question }} Context: {{ context }}"
OUTPUT = '{"answer": {{ generated_text | tojson }}, "tokens": {{ usage.completion_tokens }}}'
HANDLER = (
    "def input_fn(payload, content_type):\n"
    "    return {'prompt': 'Q=' + payload['q'], 'max_gen_len': 3}\n"
    "def output_fn(response, accept):\n"
    "    return {'handled': response['generation']}\n"
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("bedrock-processing")
    handlers = root / "handlers"
    handlers.mkdir()
    (handlers / "qa.py").write_text(HANDLER)
    template = (
        f"{sys.executable} -m outcrop.testing.nullcopy --port {{port}} --host {{host}} "
        f"--served-name {{served_name}} --model-dir {{model_dir}} --echo"
    )
    env = server_env(
        root,
        OUTCROP_SERVING__LAUNCHER="command",
        OUTCROP_SERVING__COMMAND_TEMPLATE=template,
        OUTCROP_SAGEMAKER__HANDLERS_DIR=str(handlers),
    )
    proc = ServerProcess(data_dir=root / "data", env=env, import_root=root).start()
    bedrock = boto3_client("bedrock", proc.url)
    for name, tags in (
        ("templated", [("outcrop:input-template", INPUT), ("outcrop:output-template", OUTPUT)]),
        ("handled", [("outcrop:handler", "qa")]),
        ("plain", []),
        ("broken", [("outcrop:input-template", "{{ question ")]),
    ):
        dest = root / name
        shutil.copytree(tiny_model_cache(family="llama"), dest)
        arn = bedrock.create_model_import_job(
            jobName=f"import-{name}",
            importedModelName=name,
            roleArn="arn:aws:iam::123456789012:role/Importer",
            modelDataSource={"s3DataSource": {"s3Uri": str(dest)}},
            importedModelTags=[{"key": k, "value": v} for k, v in tags],
        )["jobArn"]
        assert wait_for_job(bedrock, arn)["status"] == "Completed"
    yield proc
    proc.stop()


def _invoke(server: ServerProcess, model: str, body: dict[str, Any]) -> Any:
    runtime = boto3_client("bedrock-runtime", server.url, retries={"max_attempts": 20, "mode": "standard"})
    return runtime.invoke_model(modelId=model, body=json.dumps(body))


def test_templates_format_the_prompt_and_shape_the_answer(server: ServerProcess) -> None:
    out = _invoke(server, "templated", {"question": "Where?", "context": "In Oslo.", "max_gen_len": 8})
    body = json.loads(out["body"].read())
    assert body["answer"] == "Question: Where? Context: In Oslo."  # what the copy was asked (echoed)
    assert body["tokens"] == 5 and out["contentType"] == "application/json"


def test_a_stream_gets_the_input_template(server: ServerProcess) -> None:
    runtime = boto3_client("bedrock-runtime", server.url, retries={"max_attempts": 20, "mode": "standard"})
    stream = runtime.invoke_model_with_response_stream(
        modelId="templated", body=json.dumps({"question": "Why?", "context": "Rain."})
    )
    chunks = [json.loads(e["chunk"]["bytes"]) for e in stream["body"] if "chunk" in e]
    assert "".join(c.get("generation", "") for c in chunks) == "Question: Why? Context: Rain."


def test_a_missing_field_is_a_validation_exception_naming_it(server: ServerProcess) -> None:
    with pytest.raises(ClientError) as caught:
        _invoke(server, "templated", {"question": "no context"})
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "context" in caught.value.response["Error"]["Message"]


def test_a_handler_module_runs_around_the_call(server: ServerProcess) -> None:
    out = _invoke(server, "handled", {"q": "ping"})
    assert json.loads(out["body"].read()) == {"handled": "Q=ping"}


def test_models_without_processing_answer_as_before(server: ServerProcess) -> None:
    out = json.loads(_invoke(server, "plain", {"prompt": "as is", "max_gen_len": 4})["body"].read())
    assert out["generation"] == "as is"


def test_a_broken_template_tag_is_a_clear_validation_exception(server: ServerProcess) -> None:
    with pytest.raises(ClientError) as caught:
        _invoke(server, "broken", {"question": "x"})
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "outcrop:input-template" in error["Message"] and "Jinja2" in error["Message"]
