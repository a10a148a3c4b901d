"""RetrieveAndGenerate on real knowledge bases, end to end: a real ``outcrop serve`` process, a tiny
random-weight embedder and text model imported through boto3 ``bedrock``, a knowledge base and an S3-type
data source on a local folder made and ingested through boto3 ``bedrock-agent``, then boto3
``bedrock-agent-runtime`` RetrieveAndGenerate / RetrieveAndGenerateStream and LangChain's
``AmazonKnowledgeBasesRetriever`` pointed at the server.

With random weights the answer's words mean nothing, but retrieval is exact where the answer is known: a
question equal to a document's text (chunking NONE: one chunk per document) finds that document first, so
the citations must point at it. Needs the knowledge-base service (``outcrop.api.agent.knowledge``).
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from tests.conftest import ServerProcess, api, boto3_client, import_and_wait, server_env
from tests.shapes import check_event, check_output, record_raw_bodies

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("outcrop.api.agent.knowledge") is None,
        reason="needs the knowledge-base service (outcrop/api/agent/knowledge.py, issue 18's kb-server part)",
    ),
]

DOCUMENTS = {
    "granite.txt": (
        "Granite is a coarse grained igneous rock made of quartz and feldspar.",
        {"kind": "igneous"},
    ),
    "basalt.txt": (
        "Basalt is a fine grained volcanic rock that cools quickly from lava.",
        {"kind": "igneous"},
    ),
    "shale.txt": (
        "Shale is a soft sedimentary rock formed from compacted mud and clay.",
        {"kind": "sedimentary"},
    ),
    "marble.txt": (
        "Marble is a metamorphic rock formed when limestone is heated and pressed.",
        {"kind": "metamorphic"},
    ),
}
# Short, always-some-text answers from the random-weight model: the citations are what is checked.
GENERATION = {
    "inferenceConfig": {"textInferenceConfig": {"maxTokens": 8, "temperature": 0.0}},
    "additionalModelRequestFields": {"ignore_eos": True},
}


@dataclass
class KnowledgeServer:
    server: ServerProcess
    kb_id: str
    docs: Path

    @property
    def url(self) -> str:
        return self.server.url

    def uri(self, name: str) -> str:
        return (self.docs / name).as_uri()


def _wait(read: Any, done: set[str], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: dict[str, Any] = read()
        if state["status"] in done:
            return state
        time.sleep(0.2)
    raise AssertionError(f"still {state['status']} after {timeout} s: {state}")


@pytest.fixture(scope="module")
def kb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeServer]:
    from outcrop.testing.tiny_embedders import build_tiny_embedder
    from outcrop.testing.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("rag-kb")
    docs = root / "docs"
    docs.mkdir()
    for name, (text, metadata) in DOCUMENTS.items():
        (docs / name).write_text(text)
        (docs / f"{name}.metadata.json").write_text(json.dumps({"metadataAttributes": metadata}))
    server = ServerProcess(
        data_dir=root / "data", env=server_env(root, OUTCROP_SERVING__WORKER_THREADS="1"), import_root=root
    ).start()
    try:
        bedrock = boto3_client("bedrock", server.url)
        embedder = import_and_wait(bedrock, build_tiny_embedder(root / "embedder", family="bert"), "embedder")
        import_and_wait(bedrock, build_tiny_model(root / "writer", family="llama"), "writer")
        for name in ("embedder", "writer"):
            r = api.post(f"{server.url}/outcrop/models/{name}/warm", json={"copies": 1}, timeout=180)
            assert r.status_code == 200, r.text
        agent = boto3_client("bedrock-agent", server.url)
        kb = agent.create_knowledge_base(
            name="rocks",
            roleArn="arn:aws:iam::123456789012:role/KnowledgeBase",
            knowledgeBaseConfiguration={
                "type": "VECTOR",
                "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": embedder["importedModelArn"]},
            },
        )["knowledgeBase"]
        kb_id = kb["knowledgeBaseId"]
        _wait(lambda: agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"], {"ACTIVE", "FAILED"})
        source = agent.create_data_source(
            knowledgeBaseId=kb_id,
            name="rocks-folder",
            dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": docs.as_uri()}},
            vectorIngestionConfiguration={"chunkingConfiguration": {"chunkingStrategy": "NONE"}},
        )["dataSource"]
        job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=source["dataSourceId"])[
            "ingestionJob"
        ]
        finished = _wait(
            lambda: agent.get_ingestion_job(
                knowledgeBaseId=kb_id,
                dataSourceId=source["dataSourceId"],
                ingestionJobId=job["ingestionJobId"],
            )["ingestionJob"],
            {"COMPLETE", "FAILED", "STOPPED"},
        )
        assert finished["status"] == "COMPLETE", finished
        assert finished["statistics"]["numberOfNewDocumentsIndexed"] == len(DOCUMENTS)
        yield KnowledgeServer(server, kb_id, docs)
    finally:
        server.stop()


@pytest.fixture
def runtime(kb_server: KnowledgeServer) -> Any:
    return boto3_client("bedrock-agent-runtime", kb_server.url)


def configuration(kb_server: KnowledgeServer, **retrieval: Any) -> dict[str, Any]:
    return {
        "type": "KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration": {
            "knowledgeBaseId": kb_server.kb_id,
            "modelArn": "writer",
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 1, **retrieval}},
            "generationConfiguration": GENERATION,
        },
    }


def source_uri(found: dict[str, Any]) -> str:
    """The document a retrieved reference (or LangChain document metadata) comes from."""
    location = found.get("location") or {}
    uri = (location.get("s3Location") or {}).get("uri") or (location.get("customDocumentLocation") or {}).get(
        "id"
    )
    metadata = found.get("metadata") or found.get("source_metadata") or {}
    return str(uri or metadata.get("x-amz-bedrock-kb-source-uri"))


def cited_uris(citations: list[dict[str, Any]]) -> set[str]:
    return {source_uri(ref) for c in citations for ref in c["retrievedReferences"]}


def test_citations_point_at_the_chunk_the_question_retrieves(
    kb_server: KnowledgeServer, runtime: Any
) -> None:
    raw = record_raw_bodies(runtime)
    for name, (text, metadata) in DOCUMENTS.items():
        out = runtime.retrieve_and_generate(
            input={"text": text}, retrieveAndGenerateConfiguration=configuration(kb_server)
        )
        check_output(runtime, "RetrieveAndGenerate", raw["RetrieveAndGenerate"])
        assert out["output"]["text"] and out["sessionId"]
        assert out["citations"], out
        refs = [ref for c in out["citations"] for ref in c["retrievedReferences"]]
        assert refs and all(ref["content"]["text"] == text for ref in refs)
        assert cited_uris(out["citations"]) == {kb_server.uri(name)}
        assert refs[0]["metadata"]["kind"] == metadata["kind"]
        for citation in out["citations"]:
            part = citation["generatedResponsePart"]["textResponsePart"]
            assert out["output"]["text"][part["span"]["start"] : part["span"]["end"] + 1] == part["text"]


def test_a_filter_excludes_what_it_should(kb_server: KnowledgeServer, runtime: Any) -> None:
    granite = DOCUMENTS["granite.txt"][0]
    out = runtime.retrieve_and_generate(
        input={"text": granite},
        retrieveAndGenerateConfiguration=configuration(
            kb_server, numberOfResults=4, filter={"equals": {"key": "kind", "value": "sedimentary"}}
        ),
    )
    assert cited_uris(out["citations"]) == {kb_server.uri("shale.txt")}


def test_the_stream_and_a_follow_up_in_its_session(kb_server: KnowledgeServer, runtime: Any) -> None:
    text = DOCUMENTS["marble.txt"][0]
    response = runtime.retrieve_and_generate_stream(
        input={"text": text}, retrieveAndGenerateConfiguration=configuration(kb_server)
    )
    shapes = {"output": "RetrieveAndGenerateOutputEvent", "citation": "CitationEvent"}
    events = []
    for event in response["stream"]:
        ((name, payload),) = event.items()
        check_event(runtime, shapes[name], payload)
        events.append((name, payload))
    assert "".join(p["text"] for n, p in events if n == "output")
    citations = [p for n, p in events if n == "citation"]
    assert cited_uris(citations) == {kb_server.uri("marble.txt")}
    follow_up = runtime.retrieve_and_generate(
        input={"text": DOCUMENTS["basalt.txt"][0]},
        retrieveAndGenerateConfiguration=configuration(kb_server),
        sessionId=response["sessionId"],
    )
    assert follow_up["sessionId"] == response["sessionId"]
    assert cited_uris(follow_up["citations"]) == {kb_server.uri("basalt.txt")}


def test_unknown_knowledge_base_and_text_model_as_embedder_answer_validation_errors(
    kb_server: KnowledgeServer, runtime: Any
) -> None:
    unknown = configuration(kb_server)
    unknown["knowledgeBaseConfiguration"]["knowledgeBaseId"] = "NOSUCHKB00"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        runtime.retrieve_and_generate(input={"text": "granite"}, retrieveAndGenerateConfiguration=unknown)
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    embedder = configuration(kb_server)
    embedder["knowledgeBaseConfiguration"]["modelArn"] = "embedder"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        runtime.retrieve_and_generate(input={"text": "granite"}, retrieveAndGenerateConfiguration=embedder)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "an embedding model" in caught.value.response["Error"]["Message"]


def test_langchain_amazon_knowledge_bases_retriever_reads_outcrop(kb_server: KnowledgeServer) -> None:
    from langchain_aws.retrievers import AmazonKnowledgeBasesRetriever

    retriever = AmazonKnowledgeBasesRetriever(
        knowledge_base_id=kb_server.kb_id,
        retrieval_config={"vectorSearchConfiguration": {"numberOfResults": 2}},
        client=boto3_client("bedrock-agent-runtime", kb_server.url),
    )
    text = DOCUMENTS["shale.txt"][0]
    documents = retriever.invoke(text)
    assert 1 <= len(documents) <= 2
    first = documents[0]
    assert first.page_content == text
    assert source_uri(first.metadata) == kb_server.uri("shale.txt")
    assert first.metadata["source_metadata"]["kind"] == "sedimentary"
    assert 0.0 <= first.metadata["score"] <= 1.0
    filtered = AmazonKnowledgeBasesRetriever(
        knowledge_base_id=kb_server.kb_id,
        retrieval_config={
            "vectorSearchConfiguration": {
                "numberOfResults": 4,
                "filter": {"equals": {"key": "kind", "value": "metamorphic"}},
            }
        },
        client=boto3_client("bedrock-agent-runtime", kb_server.url),
    ).invoke(text)
    assert [source_uri(d.metadata) for d in filtered] == [kb_server.uri("marble.txt")]
