"""SageMaker callers as they are written, against the real server: LangChain's ``SagemakerEndpoint``
with an ``LLMContentHandler`` (unchanged but for the endpoint URL), and a TGI-style client that reads
the response stream line by line, as AWS's streaming samples do.

The content handlers are the ones LangChain's and AWS's documentation show for a TGI container:
JSON in with ``inputs`` + ``parameters``, ``[0]["generated_text"]`` out; for streams, each
``data:{"token": ...}`` line's token text.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.test_sagemaker_runtime_e2e import deploy
from tests.conftest import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, ServingServer, boto3_client

os.environ.setdefault("LANGCHAIN_TRACING_V2", "false")
os.environ.setdefault("LANGSMITH_TRACING", "false")

sagemaker_endpoint = pytest.importorskip("langchain_aws.llms.sagemaker_endpoint")

pytestmark = pytest.mark.e2e

PARAMETERS = {"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}


class TGIContentHandler(sagemaker_endpoint.LLMContentHandler):  # type: ignore[misc,name-defined]
    """As in LangChain's SagemakerEndpoint docs, for a Hugging Face TGI container."""

    content_type = "application/json"
    accepts = "application/json"

    def transform_input(self, prompt: str, model_kwargs: dict[str, Any]) -> bytes:
        return json.dumps({"inputs": prompt, "parameters": model_kwargs}).encode("utf-8")

    def transform_output(self, output: Any) -> str:
        return str(json.loads(output.read().decode("utf-8"))[0]["generated_text"])


class TGIStreamContentHandler(TGIContentHandler):
    """The streaming variant: LangChain hands each line of the PayloadPart bytes to transform_output."""

    def transform_output(self, output: Any) -> str:
        if not output or b"{" not in output:
            return ""
        event = json.loads(output[output.find(b"{") :].decode("utf-8"))
        return "" if event["token"].get("special") else str(event["token"]["text"])


@pytest.fixture(scope="module")
def endpoint(serving_server: ServingServer) -> str:
    deploy(
        boto3_client("sagemaker", serving_server.url), "lc-tgi", [("AllTraffic", serving_server.chat, 1.0)]
    )
    return "lc-tgi"


def greedy(serving_server: ServingServer, endpoint: str, prompt: str) -> str:
    runtime = boto3_client("sagemaker-runtime", serving_server.url)
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 8}}
    response = runtime.invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps(body), ContentType="application/json"
    )
    return str(json.loads(response["Body"].read())[0]["generated_text"])


def test_langchain_sagemaker_endpoint_invokes_with_a_boto3_client(
    serving_server: ServingServer, endpoint: str
) -> None:
    llm = sagemaker_endpoint.SagemakerEndpoint(
        endpoint_name=endpoint,
        client=boto3_client("sagemaker-runtime", serving_server.url),
        content_handler=TGIContentHandler(),
        model_kwargs=PARAMETERS,
    )
    answer = llm.invoke("Tell me a story")
    assert isinstance(answer, str)
    # Greedy when no sampling parameter is given: LangChain's answer is the plain boto3 call's.
    llm_greedy = sagemaker_endpoint.SagemakerEndpoint(
        endpoint_name=endpoint,
        client=boto3_client("sagemaker-runtime", serving_server.url),
        content_handler=TGIContentHandler(),
        model_kwargs={"max_new_tokens": 8},
    )
    assert llm_greedy.invoke("Tell me a story") == greedy(serving_server, endpoint, "Tell me a story")


def test_langchain_sagemaker_endpoint_with_endpoint_url_and_keys(
    serving_server: ServingServer, endpoint: str
) -> None:
    llm = sagemaker_endpoint.SagemakerEndpoint(
        endpoint_name=endpoint,
        endpoint_url=serving_server.url,
        region_name="us-east-1",
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
        content_handler=TGIContentHandler(),
        model_kwargs={"max_new_tokens": 8},
    )
    assert llm.invoke("Once upon") == greedy(serving_server, endpoint, "Once upon")


def test_langchain_sagemaker_endpoint_streams_the_tokens(
    serving_server: ServingServer, endpoint: str
) -> None:
    llm = sagemaker_endpoint.SagemakerEndpoint(
        endpoint_name=endpoint,
        client=boto3_client("sagemaker-runtime", serving_server.url),
        content_handler=TGIStreamContentHandler(),
        model_kwargs={"max_new_tokens": 8},
        streaming=True,
    )
    chunks = list(llm.stream("Tell me a story"))
    assert len(chunks) >= 1
    assert "".join(chunks) == greedy(serving_server, endpoint, "Tell me a story")


def test_langchain_sagemaker_endpoint_names_an_inference_component(serving_server: ServingServer) -> None:
    from tests.api.test_sagemaker_components_e2e import add_component, host_endpoint

    sm = boto3_client("sagemaker", serving_server.url)
    host_endpoint(sm, "lc-shared")
    add_component(sm, "lc-shared", "lc-ic", serving_server.chat)
    llm = sagemaker_endpoint.SagemakerEndpoint(
        endpoint_name="lc-shared",
        inference_component_name="lc-ic",
        client=boto3_client("sagemaker-runtime", serving_server.url),
        content_handler=TGIContentHandler(),
        model_kwargs={"max_new_tokens": 8},
    )
    assert llm.invoke("Tell me a story") == greedy(serving_server, "lc-tgi", "Tell me a story")


class LineIterator:
    """AWS's streaming sample's reader: PayloadPart bytes -> lines, a JSON object may span parts."""

    def __init__(self, stream: Any) -> None:
        self.byte_iterator = iter(stream)
        self.buffer = io.BytesIO()
        self.read_pos = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        while True:
            self.buffer.seek(self.read_pos)
            line = self.buffer.readline()
            if line and line[-1] == ord("\n"):
                self.read_pos += len(line)
                return line[:-1]
            chunk = next(self.byte_iterator)  # StopIteration ends the lines
            if "PayloadPart" in chunk:
                self.buffer.seek(0, io.SEEK_END)
                self.buffer.write(chunk["PayloadPart"]["Bytes"])


def test_a_tgi_style_client_reads_tokens_then_the_final_event(
    serving_server: ServingServer, endpoint: str
) -> None:
    runtime = boto3_client("sagemaker-runtime", serving_server.url)
    body = {"inputs": "Tell me a story", "parameters": {"max_new_tokens": 8, "details": True}}
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=json.dumps(body), ContentType="application/json"
    )
    tokens: list[str] = []
    final: dict[str, Any] | None = None
    for line in LineIterator(response["Body"]):
        if not line.startswith(b"data:"):
            continue  # the blank line between events
        event = json.loads(line[len(b"data:") :])
        assert final is None, "no event after the one carrying generated_text"
        if not event["token"]["special"]:
            tokens.append(event["token"]["text"])
        if event["generated_text"] is not None:
            final = event
    assert final is not None
    assert "".join(tokens) == final["generated_text"] == greedy(serving_server, endpoint, "Tell me a story")
    assert final["details"]["finish_reason"] in ("length", "eos_token", "stop_sequence")
    assert final["details"]["generated_tokens"] >= len(tokens) >= 1
