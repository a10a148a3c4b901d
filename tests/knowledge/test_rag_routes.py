"""RetrieveAndGenerate(+Stream) through boto3 ``bedrock-agent-runtime`` against a real Outcrop app on a loopback
port, with a fake knowledge service at the production seam (``services.extra["knowledge"]``, where the app
factory puts the real one) and null copies in echo mode as the model (``--echo --request-log``): the copy
answers with the last message's text, so a question written in the citation format comes back as a cited
answer, and the request log shows what the model was asked."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import uvicorn

from outcrop.api.agent import kb_runtime
from outcrop.api.app import build_services, create_app
from outcrop.api.deps import Services
from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError, ModelFailedError, NotFoundError, ThrottlingError
from outcrop.testing.tiny_embedders import build_tiny_embedder
from tests.conftest import AUTH, api, boto3_client, free_port, import_and_wait
from tests.shapes import check_event, check_output, record_raw_bodies

pytestmark = pytest.mark.e2e

KB = "KBROCKS001"
CHUNKS = [
    {
        "content": {"text": "Granite is a coarse-grained igneous rock.", "type": "TEXT"},
        "location": {"type": "S3", "s3Location": {"uri": "s3://rocks/granite.md"}},
        "metadata": {"x-amz-bedrock-kb-source-uri": "s3://rocks/granite.md", "kind": "igneous"},
        "score": 0.91,
    },
    {
        "content": {"text": "Shale is a fine-grained sedimentary rock.", "type": "TEXT"},
        "location": {"type": "S3", "s3Location": {"uri": "s3://rocks/shale.md"}},
        "metadata": {"x-amz-bedrock-kb-source-uri": "s3://rocks/shale.md", "kind": "sedimentary"},
        "score": 0.52,
    },
]
# A question in the citation format: the echo copy answers with it, so the answer cites sources 2 and 1.
CITED = (
    "<answer><answer_part><text>Granite is igneous.</text><sources><source>1</source></sources></answer_part>"
    "<answer_part><text>Shale is sedimentary.</text><sources><source>2</source></sources></answer_part></answer>"
)


BLOCKED_INPUT = "Sorry, I cannot answer that."
BLOCKED_OUTPUT = "Sorry, the answer was withheld."


class FakeKnowledge:
    """The knowledge service's Retriever seam, answering from fixed chunks; records each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    # The app's lifespan starts and stops the knowledge service it finds at the seam.
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def retrieve(
        self,
        knowledge_base_id: str,
        text: str,
        *,
        number_of_results: int = 5,
        search_type: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        self.calls.append(
            {
                "kb": knowledge_base_id,
                "text": text,
                "n": number_of_results,
                "type": search_type,
                "filter": filter,
            }
        )
        if knowledge_base_id != KB:
            raise NotFoundError(
                "Knowledge base", knowledge_base_id, "ListKnowledgeBases shows the ones there are."
            )
        if filter is not None and not isinstance((filter.get("startsWith") or {}).get("value", ""), str):
            raise InvalidRequestError("startsWith compares strings; give it a string value.")
        return CHUNKS[:number_of_results]


@dataclass
class RagServer:
    url: str
    services: Services
    knowledge: FakeKnowledge
    request_log: Path
    chat_arn: str
    plain_arn: str
    guardrail_id: str

    def copy_requests(self) -> list[dict[str, Any]]:
        if not self.request_log.exists():
            return []
        return [json.loads(line) for line in self.request_log.read_text().splitlines()]


@pytest.fixture(scope="module")
def rag_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[RagServer]:
    from outcrop.envs import load_config
    from tests.conftest import TEST_ACCESS_KEY_ID, TEST_API_KEY, TEST_SECRET_ACCESS_KEY

    root = tmp_path_factory.mktemp("rag-routes")
    log = root / "copy-requests.jsonl"
    template = (
        f"{sys.executable} -m outcrop.testing.nullcopy --port {{port}} --host {{host}} "
        f"--served-name {{served_name}} --model-dir {{model_dir}} --echo --request-log {log}"
    )
    port = free_port()
    config: OutcropConfig = load_config(
        data_dir=root / "data",
        **{
            "server.port": port,
            "registry.allowed_roots": [root],
            "store.job_lease_seconds": 2.0,
            "auth.bootstrap_access_key_id": TEST_ACCESS_KEY_ID,
            "auth.bootstrap_secret_access_key": TEST_SECRET_ACCESS_KEY,
            "auth.bootstrap_api_key": TEST_API_KEY,
            "serving.launcher": "command",
            "serving.command_template": template,
        },
    )
    services = build_services(config)
    knowledge = FakeKnowledge()
    services.extra["knowledge"] = knowledge  # the production seam
    server = uvicorn.Server(
        uvicorn.Config(create_app(config, services=services), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        bedrock = boto3_client("bedrock", url)
        arns = {}
        for name, spec in (
            ("chat", {"family": "llama"}),
            ("plain", {"family": "qwen2", "chat_template": False}),
        ):
            shutil.copytree(tiny_model_cache(**spec), root / name)
            arns[name] = import_and_wait(bedrock, root / name, name)["importedModelArn"]
            r = api.post(f"{url}/outcrop/models/{name}/warm", json={"copies": 1}, timeout=120)
            assert r.status_code == 200, r.text
        embedder = build_tiny_embedder(root / "embedder", family="bert")
        import_and_wait(bedrock, embedder, "embedder")
        guardrail = bedrock.create_guardrail(
            name="rag-guard",
            blockedInputMessaging=BLOCKED_INPUT,
            blockedOutputsMessaging=BLOCKED_OUTPUT,
            wordPolicyConfig={"wordsConfig": [{"text": "project zephyr"}]},
            sensitiveInformationPolicyConfig={
                "piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE"}]
            },
        )["guardrailId"]
        yield RagServer(url, services, knowledge, log, arns["chat"], arns["plain"], guardrail)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def runtime(rag_server: RagServer) -> Any:
    return boto3_client("bedrock-agent-runtime", rag_server.url)


def config(model: str, **kb: Any) -> dict[str, Any]:
    return {
        "type": "KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration": {"knowledgeBaseId": KB, "modelArn": model, **kb},
    }


def uris(citation: dict[str, Any]) -> list[str]:
    return [r["location"]["s3Location"]["uri"] for r in citation["retrievedReferences"]]


def stream_events(response: dict[str, Any], runtime: Any) -> list[tuple[str, dict[str, Any]]]:
    """The stream's events as (member, payload), each checked against its botocore shape."""
    shapes = {
        "output": "RetrieveAndGenerateOutputEvent",
        "citation": "CitationEvent",
        "guardrail": "GuardrailEvent",
    }
    events = []
    for event in response["stream"]:
        ((name, payload),) = event.items()
        check_event(runtime, shapes[name], payload)
        events.append((name, payload))
    return events


# -- RetrieveAndGenerate


def test_answer_cites_the_retrieved_chunks_with_spans_and_botocore_shapes(
    rag_server: RagServer, runtime: Any
) -> None:
    raw = record_raw_bodies(runtime)
    out = runtime.retrieve_and_generate(
        input={"text": CITED}, retrieveAndGenerateConfiguration=config(rag_server.chat_arn)
    )
    check_output(runtime, "RetrieveAndGenerate", raw["RetrieveAndGenerate"])
    assert out["output"]["text"] == "Granite is igneous. Shale is sedimentary."
    first, second = out["citations"]
    part = first["generatedResponsePart"]["textResponsePart"]
    assert part == {"text": "Granite is igneous.", "span": {"start": 0, "end": 18}}
    assert uris(first) == ["s3://rocks/granite.md"] and uris(second) == ["s3://rocks/shale.md"]
    assert first["retrievedReferences"][0]["content"]["text"] == CHUNKS[0]["content"]["text"]
    assert first["retrievedReferences"][0]["metadata"]["kind"] == "igneous"
    assert out["sessionId"]
    # The model saw the retrieved chunks, numbered, in the system prompt, and the question as the user turn.
    asked = rag_server.copy_requests()[-1]["messages"]
    assert asked[0]["role"] == "system" and "<source>2</source>" in asked[0]["content"]
    assert CHUNKS[1]["content"]["text"] in asked[0]["content"] and asked[-1]["content"] == CITED


def test_retrieval_configuration_and_inference_config_reach_the_retriever_and_the_model(
    rag_server: RagServer, runtime: Any
) -> None:
    where = {"equals": {"key": "kind", "value": "igneous"}}
    out = runtime.retrieve_and_generate(
        input={"text": "What is granite?"},
        retrieveAndGenerateConfiguration=config(
            "chat",
            retrievalConfiguration={
                "vectorSearchConfiguration": {
                    "numberOfResults": 1,
                    "overrideSearchType": "HYBRID",
                    "filter": where,
                }
            },
            generationConfiguration={
                "promptTemplate": {"textPromptTemplate": "Context: $search_results$\nQuestion: $query$"},
                "inferenceConfig": {
                    "textInferenceConfig": {
                        "maxTokens": 40,
                        "temperature": 0.0,
                        "topP": 0.9,
                        "stopSequences": ["ZZZ"],
                    }
                },
            },
        ),
    )
    assert rag_server.knowledge.calls[-1] == {
        "kb": KB,
        "text": "What is granite?",
        "n": 1,
        "type": "HYBRID",
        "filter": where,
    }
    sent = rag_server.copy_requests()[-1]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stop"]) == (40, 0.0, 0.9, ["ZZZ"])
    assert sent["messages"] == [
        {"role": "user", "content": sent["messages"][0]["content"]},
    ]
    assert sent["messages"][0]["content"].startswith("Context: <search_results>")
    assert sent["messages"][0]["content"].endswith("Question: What is granite?")
    # An answer that is not in the citation format: one citation over it, referencing what was retrieved.
    (only,) = out["citations"]
    assert only["generatedResponsePart"]["textResponsePart"]["text"] == out["output"]["text"]
    assert uris(only) == ["s3://rocks/granite.md"]


def test_a_follow_up_in_the_session_shows_the_model_the_earlier_turns(
    rag_server: RagServer, runtime: Any
) -> None:
    first = runtime.retrieve_and_generate(
        input={"text": "What is granite?"}, retrieveAndGenerateConfiguration=config("chat")
    )
    second = runtime.retrieve_and_generate(
        input={"text": "And shale?"},
        retrieveAndGenerateConfiguration=config("chat"),
        sessionId=first["sessionId"],
    )
    assert second["sessionId"] == first["sessionId"]
    asked = rag_server.copy_requests()[-1]["messages"]
    assert [m["role"] for m in asked] == ["system", "user", "assistant", "user"]
    assert asked[1]["content"] == "What is granite?" and asked[2]["content"] == first["output"]["text"]
    assert asked[3]["content"] == "And shale?"


def test_an_unknown_session_id_is_a_validation_exception(runtime: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        runtime.retrieve_and_generate(
            input={"text": "q"}, retrieveAndGenerateConfiguration=config("chat"), sessionId="no-such-session"
        )
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "Session with Id no-such-session is not valid" in caught.value.response["Error"]["Message"]


def test_a_model_without_chat_template_answers_through_a_completion(
    rag_server: RagServer, runtime: Any
) -> None:
    out = runtime.retrieve_and_generate(
        input={"text": "What is shale?"}, retrieveAndGenerateConfiguration=config("plain")
    )
    sent = rag_server.copy_requests()[-1]
    assert "messages" not in sent and sent["prompt"].endswith("User: What is shale?\nAssistant:")
    assert CHUNKS[1]["content"]["text"] in sent["prompt"]
    assert len(out["citations"]) == 1 and len(out["citations"][0]["retrievedReferences"]) == 2


@pytest.mark.parametrize(
    ("configuration", "code", "says"),
    [
        (
            {
                "type": "EXTERNAL_SOURCES",
                "externalSourcesConfiguration": {
                    "modelArn": "chat",
                    "sources": [{"sourceType": "S3", "s3Location": {"uri": "s3://bucket/doc.pdf"}}],
                },
            },
            "ValidationException",
            "externalSourcesConfiguration (type EXTERNAL_SOURCES) is not supported",
        ),
        (
            {
                "type": "KNOWLEDGE_BASE",
                "knowledgeBaseConfiguration": {"knowledgeBaseId": "KBNOPE0001", "modelArn": "chat"},
            },
            "ResourceNotFoundException",
            "KBNOPE0001",
        ),
        (
            {
                "type": "KNOWLEDGE_BASE",
                "knowledgeBaseConfiguration": {"knowledgeBaseId": KB, "modelArn": "nope"},
            },
            "ResourceNotFoundException",
            "RetrieveAndGenerate generates with an imported text model",
        ),
        (
            config(
                "chat",
                retrievalConfiguration={
                    "vectorSearchConfiguration": {"filter": {"startsWith": {"key": "k", "value": 1}}}
                },
            ),
            "ValidationException",
            "startsWith compares strings",
        ),
    ],
)
def test_bad_requests_answer_in_bedrocks_dialect_with_the_fix(
    runtime: Any, configuration: dict[str, Any], code: str, says: str
) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        runtime.retrieve_and_generate(input={"text": "q"}, retrieveAndGenerateConfiguration=configuration)
    assert caught.value.response["Error"]["Code"] == code
    assert says in caught.value.response["Error"]["Message"]


def test_without_a_knowledge_service_the_error_says_so(rag_server: RagServer, runtime: Any) -> None:
    knowledge = rag_server.services.extra.pop("knowledge")
    try:
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            runtime.retrieve_and_generate(
                input={"text": "q"}, retrieveAndGenerateConfiguration=config("chat")
            )
    finally:
        rag_server.services.extra["knowledge"] = knowledge
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert "built without knowledge bases" in caught.value.response["Error"]["Message"]


def test_the_caller_needs_retrieve_and_generate_on_the_kb_and_invoke_model_on_the_model(
    rag_server: RagServer,
) -> None:
    aws = rag_server.services.config.aws
    kb_arn = f"arn:aws:bedrock:{aws.region}:{aws.account_id}:knowledge-base/{KB}"

    def client_with(statement: list[dict[str, Any]], name: str) -> Any:
        r = api.post(
            f"{rag_server.url}/outcrop/keys", json={"name": name, "policy": {"Statement": statement}}
        )
        assert r.status_code == 200, r.text
        import boto3
        from botocore.config import Config

        return boto3.client(
            "bedrock-agent-runtime",
            endpoint_url=rag_server.url,
            region_name="us-east-1",
            aws_access_key_id=r.json()["accessKeyId"],
            aws_secret_access_key=r.json()["secretAccessKey"],
            config=Config(retries={"max_attempts": 1}),
        )

    kb_only = client_with(
        [{"Effect": "Allow", "Action": ["bedrock:RetrieveAndGenerate"], "Resource": [kb_arn]}], "kbonly"
    )
    model_only = client_with(
        [{"Effect": "Allow", "Action": ["bedrock:InvokeModel"], "Resource": [rag_server.chat_arn]}],
        "modelonly",
    )
    both = client_with(
        [
            {"Effect": "Allow", "Action": ["bedrock:RetrieveAndGenerate"], "Resource": [kb_arn]},
            {"Effect": "Allow", "Action": ["bedrock:InvokeModel"], "Resource": [rag_server.chat_arn]},
        ],
        "both",
    )
    for client, denied in ((kb_only, "bedrock:InvokeModel"), (model_only, "bedrock:RetrieveAndGenerate")):
        for call in (client.retrieve_and_generate, client.retrieve_and_generate_stream):
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                call(input={"text": "q"}, retrieveAndGenerateConfiguration=config(rag_server.chat_arn))
            assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
            assert f"not authorized to perform: {denied}" in caught.value.response["Error"]["Message"]
    out = both.retrieve_and_generate(
        input={"text": "q"}, retrieveAndGenerateConfiguration=config(rag_server.chat_arn)
    )
    assert out["output"]["text"] == "q"
    # Another caller's session id reads as unknown.
    with pytest.raises(botocore.exceptions.ClientError, match="is not valid"):
        boto3_client("bedrock-agent-runtime", rag_server.url).retrieve_and_generate(
            input={"text": "q"}, retrieveAndGenerateConfiguration=config("chat"), sessionId=out["sessionId"]
        )
    assert (
        both.retrieve_and_generate(
            input={"text": "again"},
            retrieveAndGenerateConfiguration=config(rag_server.chat_arn),
            sessionId=out["sessionId"],
        )["sessionId"]
        == out["sessionId"]
    )


# -- RetrieveAndGenerateStream


def test_the_stream_sends_the_answer_as_output_events_then_citations_and_the_session_header(
    rag_server: RagServer, runtime: Any
) -> None:
    whole = runtime.retrieve_and_generate(
        input={"text": CITED}, retrieveAndGenerateConfiguration=config("chat")
    )
    response = runtime.retrieve_and_generate_stream(
        input={"text": CITED}, retrieveAndGenerateConfiguration=config("chat")
    )
    assert response["sessionId"] and response["sessionId"] != whole["sessionId"]
    events = stream_events(response, runtime)
    text = "".join(payload["text"] for name, payload in events if name == "output")
    citations = [payload for name, payload in events if name == "citation"]
    assert text == whole["output"]["text"]
    assert [{k: c[k] for k in ("generatedResponsePart", "retrievedReferences")} for c in citations] == whole[
        "citations"
    ]
    assert (
        citations[0]["citation"]["retrievedReferences"] == citations[0]["retrievedReferences"]
    )  # deprecated member
    # The first part's citation arrives before the second part's text.
    names = [name for name, _ in events]
    assert names.index("citation") < len(names) - 1 - names[::-1].index("output")
    # The streamed turn is in the session: a follow-up sees it.
    runtime.retrieve_and_generate(
        input={"text": "more?"},
        retrieveAndGenerateConfiguration=config("chat"),
        sessionId=response["sessionId"],
    )
    asked = rag_server.copy_requests()[-1]["messages"]
    assert asked[1]["content"] == CITED and asked[2]["content"] == whole["output"]["text"]


def test_stream_errors_before_the_first_event_are_ordinary_client_errors(runtime: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        runtime.retrieve_and_generate_stream(
            input={"text": "q"}, retrieveAndGenerateConfiguration=config("nope")
        )
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_raw_http_with_an_api_key_works_too(rag_server: RagServer) -> None:
    body = {"input": {"text": "hello"}, "retrieveAndGenerateConfiguration": config("chat")}
    r = api.post(f"{rag_server.url}/retrieveAndGenerate", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["output"]["text"] == "hello"


def test_stream_error_members_are_the_ones_botocore_knows(runtime: Any) -> None:
    shape = runtime.meta.service_model.shape_for("RetrieveAndGenerateStreamResponseOutput")
    errors = {name for name, member in shape.members.items() if member.metadata.get("exception")}
    assert errors == kb_runtime.STREAM_ERROR_MEMBERS
    assert kb_runtime.FALLBACK_STREAM_ERROR_MEMBER in errors


@pytest.mark.parametrize(
    ("error", "member"),
    [
        (ThrottlingError("Too many requests; slow down."), "throttlingException"),
        (ModelFailedError("The copy stopped."), "badGatewayException"),
    ],
)
def test_an_error_mid_stream_is_an_exception_frame_boto3_raises(
    runtime: Any, error: Any, member: str
) -> None:
    from botocore.eventstream import EventStream
    from botocore.exceptions import EventStreamError
    from botocore.parsers import EventStreamJSONParser

    class Raw:  # what botocore reads the frames from
        def stream(self) -> Iterator[bytes]:
            yield kb_runtime.stream_error(error, "chat")

        def close(self) -> None:
            pass

    shape = runtime.meta.service_model.operation_model("RetrieveAndGenerateStream").output_shape
    stream = EventStream(Raw(), shape.members["stream"], EventStreamJSONParser(), "RetrieveAndGenerateStream")
    with pytest.raises(EventStreamError) as caught:
        list(stream)
    assert caught.value.response["Error"]["Code"] == member
    assert error.message in caught.value.response["Error"]["Message"]


# -- guardrailConfiguration


def guarded(server: RagServer) -> dict[str, Any]:
    return config(
        "chat",
        generationConfiguration={
            "guardrailConfiguration": {"guardrailId": server.guardrail_id, "guardrailVersion": "DRAFT"}
        },
    )


def test_a_guardrail_that_blocks_the_question_answers_its_message_without_retrieving(
    rag_server: RagServer, runtime: Any
) -> None:
    retrieved, asked = len(rag_server.knowledge.calls), len(rag_server.copy_requests())
    raw = record_raw_bodies(runtime)
    out = runtime.retrieve_and_generate(
        input={"text": "Tell me about Project Zephyr."}, retrieveAndGenerateConfiguration=guarded(rag_server)
    )
    check_output(runtime, "RetrieveAndGenerate", raw["RetrieveAndGenerate"])
    assert out["output"]["text"] == BLOCKED_INPUT and out["citations"] == []
    assert out["guardrailAction"] == "INTERVENED"
    assert len(rag_server.knowledge.calls) == retrieved and len(rag_server.copy_requests()) == asked
    # The session exists, without the blocked turn.
    follow = runtime.retrieve_and_generate(
        input={"text": "What is granite?"},
        retrieveAndGenerateConfiguration=guarded(rag_server),
        sessionId=out["sessionId"],
    )
    assert follow["guardrailAction"] == "NONE" and follow["output"]["text"] == "What is granite?"
    assert [m["role"] for m in rag_server.copy_requests()[-1]["messages"]] == ["system", "user"]


def test_a_guardrail_masks_the_question_and_the_answer_and_citations_stay(
    rag_server: RagServer, runtime: Any
) -> None:
    question = CITED.replace("Granite is igneous.", "Mail jane@example.com about granite.")
    out = runtime.retrieve_and_generate(
        input={"text": question}, retrieveAndGenerateConfiguration=guarded(rag_server)
    )
    assert out["guardrailAction"] == "INTERVENED"
    assert out["output"]["text"] == "Mail {EMAIL} about granite. Shale is sedimentary."
    assert "jane@example.com" not in rag_server.knowledge.calls[-1]["text"]
    assert "jane@example.com" not in json.dumps(rag_server.copy_requests()[-1])
    first, second = out["citations"]
    assert first["generatedResponsePart"]["textResponsePart"] == {
        "text": "Mail {EMAIL} about granite.",
        "span": {"start": 0, "end": 26},
    }
    assert uris(first) == ["s3://rocks/granite.md"] and uris(second) == ["s3://rocks/shale.md"]


def test_the_stream_under_a_guardrail_ends_with_its_action(rag_server: RagServer, runtime: Any) -> None:
    response = runtime.retrieve_and_generate_stream(
        input={"text": CITED}, retrieveAndGenerateConfiguration=guarded(rag_server)
    )
    events = stream_events(response, runtime)
    assert [name for name, _ in events] == ["output", "citation", "citation", "guardrail"]
    assert events[0][1]["text"] == "Granite is igneous. Shale is sedimentary."
    assert events[-1][1] == {"action": "NONE"}
    blocked = runtime.retrieve_and_generate_stream(
        input={"text": "project zephyr"}, retrieveAndGenerateConfiguration=guarded(rag_server)
    )
    assert stream_events(blocked, runtime) == [
        ("output", {"text": BLOCKED_INPUT}),
        ("guardrail", {"action": "INTERVENED"}),
    ]
