"""boto3 ``bedrock-agent`` knowledge bases and ``bedrock-agent-runtime`` Retrieve against a real server
with a tiny random-weight embedding model: every operation in the service models' shapes, retrieval
where the answer is known, incremental re-sync, parse failures and clear errors."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, api, boto3_client, import_and_wait, server_env
from tests.knowledge.kb_helpers import (
    ROLE_ARN,
    KBServer,
    create_ds,
    create_kb,
    import_embedder,
    sentence,
    sync,
    write_corpus,
)
from tests.shapes import check_output, record_raw_bodies

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def kb_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[KBServer]:
    root = tmp_path_factory.mktemp("kb-server")
    env = server_env(root, OUTCROP_SERVING__WORKER_THREADS="1")
    server = ServerProcess(data_dir=root / "data", env=env, import_root=root).start()
    embedder = import_embedder(server, root)
    text_folder = root / "text-model"
    shutil.copytree(tiny_model_cache(family="llama"), text_folder)
    text_arn = import_and_wait(boto3_client("bedrock", server.url), text_folder, "text-model")[
        "importedModelArn"
    ]
    yield KBServer(server=server, root=root, embedder_arn=embedder, text_model_arn=text_arn)
    server.stop()


def test_every_operation_answers_in_the_service_models_shapes(kb_server: KBServer) -> None:
    agent, runtime = kb_server.agent(), kb_server.runtime()
    raw, raw_runtime = record_raw_bodies(agent), record_raw_bodies(runtime)
    folder = kb_server.root / "shapes-docs"
    texts = write_corpus(folder, 6)
    kb = agent.create_knowledge_base(
        name="shapes",
        description="shape checks",
        roleArn=ROLE_ARN,
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": kb_server.embedder_arn},
        },
        storageConfiguration={
            "type": "OPENSEARCH_SERVERLESS",
            "opensearchServerlessConfiguration": {
                "collectionArn": "arn:aws:aoss:us-east-1:123456789012:collection/abc",
                "vectorIndexName": "idx",
                "fieldMapping": {"vectorField": "v", "textField": "t", "metadataField": "m"},
            },
        },
    )["knowledgeBase"]
    kb_id = kb["knowledgeBaseId"]
    assert kb["knowledgeBaseArn"].endswith(f":knowledge-base/{kb_id}") and kb["status"] == "ACTIVE"
    assert agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["name"] == "shapes"
    assert [s["knowledgeBaseId"] for s in agent.list_knowledge_bases()["knowledgeBaseSummaries"]].count(
        kb_id
    ) == 1
    updated = agent.update_knowledge_base(
        knowledgeBaseId=kb_id,
        name="shapes2",
        roleArn=ROLE_ARN,
        knowledgeBaseConfiguration=kb["knowledgeBaseConfiguration"],
    )["knowledgeBase"]
    assert updated["name"] == "shapes2"
    ds = agent.create_data_source(
        knowledgeBaseId=kb_id,
        name="folder",
        description="six documents",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": folder.as_uri()}},
        vectorIngestionConfiguration={
            "chunkingConfiguration": {
                "chunkingStrategy": "FIXED_SIZE",
                "fixedSizeChunkingConfiguration": {"maxTokens": 60, "overlapPercentage": 10},
            }
        },
    )["dataSource"]
    ds_id = ds["dataSourceId"]
    assert ds["status"] == "AVAILABLE" and ds["dataDeletionPolicy"] == "DELETE"
    assert agent.get_data_source(knowledgeBaseId=kb_id, dataSourceId=ds_id)["dataSource"]["name"] == "folder"
    assert [
        s["dataSourceId"] for s in agent.list_data_sources(knowledgeBaseId=kb_id)["dataSourceSummaries"]
    ] == [ds_id]
    agent.update_data_source(
        knowledgeBaseId=kb_id,
        dataSourceId=ds_id,
        name="folder2",
        dataSourceConfiguration=ds["dataSourceConfiguration"],
        dataDeletionPolicy="RETAIN",
    )
    job = sync(agent, kb_id, ds_id)
    assert job["status"] == "COMPLETE", job
    assert job["statistics"]["numberOfDocumentsScanned"] == 6
    assert job["statistics"]["numberOfMetadataDocumentsScanned"] == 6
    assert job["statistics"]["numberOfNewDocumentsIndexed"] == 6
    jobs = agent.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJobSummaries"]
    assert [j["ingestionJobId"] for j in jobs] == [job["ingestionJobId"]]
    with pytest.raises(agent.exceptions.ConflictException, match="already finished"):
        agent.stop_ingestion_job(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job["ingestionJobId"]
        )
    results = runtime.retrieve(
        knowledgeBaseId=kb["knowledgeBaseArn"],  # an ARN works as well as an id
        retrievalQuery={"text": next(iter(texts.values()))},
        retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 3}},
    )["retrievalResults"]
    assert len(results) == 3 and results[0]["location"]["type"] == "S3"
    assert results[0]["metadata"]["x-amz-bedrock-kb-data-source-id"] == ds_id
    for operation in (
        "CreateKnowledgeBase",
        "GetKnowledgeBase",
        "ListKnowledgeBases",
        "UpdateKnowledgeBase",
        "CreateDataSource",
        "GetDataSource",
        "ListDataSources",
        "UpdateDataSource",
        "StartIngestionJob",
        "GetIngestionJob",
        "ListIngestionJobs",
    ):
        body = raw[operation]
        source = body.get("dataSource", {}).get("dataSourceConfiguration", {}).get("s3Configuration")
        if source is not None:
            # The one documented extension: a folder on the server where the model has a bucket ARN
            # (botocore does not check patterns; docs/knowledge-bases.md says so).
            assert source["bucketArn"] == folder.as_uri()
            source["bucketArn"] = "arn:aws:s3:::local-folder"
        check_output(agent, operation, body)
    check_output(runtime, "Retrieve", raw_runtime["Retrieve"])
    assert agent.delete_data_source(knowledgeBaseId=kb_id, dataSourceId=ds_id)["status"] == "DELETING"
    assert agent.delete_knowledge_base(knowledgeBaseId=kb_id)["status"] in ("DELETING",)
    check_output(agent, "DeleteDataSource", raw["DeleteDataSource"])
    check_output(agent, "DeleteKnowledgeBase", raw["DeleteKnowledgeBase"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            agent.get_knowledge_base(knowledgeBaseId=kb_id)
        except agent.exceptions.ResourceNotFoundException:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the knowledge base was never deleted")


def test_a_query_equal_to_a_chunks_text_returns_that_chunk_first_and_filters_exclude(
    kb_server: KBServer,
) -> None:
    agent, runtime = kb_server.agent(), kb_server.runtime()
    folder = kb_server.root / "known-docs"
    texts = write_corpus(folder, 12, seed=7)
    kb_id = create_kb(agent, kb_server.embedder_arn, name="known")
    ds_id = create_ds(agent, kb_id, folder)
    assert sync(agent, kb_id, ds_id)["statistics"]["numberOfNewDocumentsIndexed"] == 12
    for name in ("doc0003.txt", "doc0008.txt"):
        for search in ("SEMANTIC", "HYBRID"):
            results = runtime.retrieve(
                knowledgeBaseId=kb_id,
                retrievalQuery={"text": texts[name]},
                retrievalConfiguration={
                    "vectorSearchConfiguration": {"numberOfResults": 5, "overrideSearchType": search}
                },
            )["retrievalResults"]
            top = results[0]
            assert top["content"]["text"] == texts[name], search
            assert top["location"]["s3Location"]["uri"] == (folder / name).resolve().as_uri()
            assert top["metadata"]["genre"] == ("drama" if int(name[3:7]) % 2 else "comedy")
            assert 0.0 <= top["score"] <= 1.0
            assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    drama = runtime.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": texts["doc0004.txt"]},  # a comedy: filtered out
        retrievalConfiguration={
            "vectorSearchConfiguration": {
                "numberOfResults": 12,
                "filter": {"equals": {"key": "genre", "value": "drama"}},
            }
        },
    )["retrievalResults"]
    assert len(drama) == 6 and {r["metadata"]["genre"] for r in drama} == {"drama"}
    assert texts["doc0004.txt"] not in {r["content"]["text"] for r in drama}
    ranked = runtime.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": texts["doc0004.txt"]},
        retrievalConfiguration={
            "vectorSearchConfiguration": {
                "numberOfResults": 12,
                "filter": {
                    "andAll": [
                        {"greaterThanOrEquals": {"key": "rank", "value": 9}},
                        {"notEquals": {"key": "genre", "value": "drama"}},
                    ]
                },
            }
        },
    )["retrievalResults"]
    assert sorted(r["metadata"]["rank"] for r in ranked) == [10]
    with pytest.raises(runtime.exceptions.ValidationException, match=r"(?i)operator|filter"):
        runtime.retrieve(
            knowledgeBaseId=kb_id,
            retrievalQuery={"text": "hello"},
            retrievalConfiguration={
                "vectorSearchConfiguration": {"filter": {"greaterThan": {"key": "rank", "value": "high"}}}
            },
        )


def test_resync_indexes_only_what_changed_and_counts_it_as_bedrock_does(kb_server: KBServer) -> None:
    agent, runtime = kb_server.agent(), kb_server.runtime()
    folder = kb_server.root / "resync-docs"
    texts = write_corpus(folder, 8, seed=3)
    kb_id = create_kb(agent, kb_server.embedder_arn, name="resync")
    ds_id = create_ds(agent, kb_id, folder)
    first = sync(agent, kb_id, ds_id)["statistics"]
    assert (first["numberOfNewDocumentsIndexed"], first["numberOfDocumentsScanned"]) == (8, 8)
    unchanged = sync(agent, kb_id, ds_id)["statistics"]
    assert unchanged["numberOfDocumentsScanned"] == 8
    assert (
        sum(
            v
            for k, v in unchanged.items()
            if k not in ("numberOfDocumentsScanned", "numberOfMetadataDocumentsScanned")
        )
        == 0
    )
    (folder / "doc0001.txt").write_text("quick brown fox jumps over the lazy dog once more today.")
    (folder / "doc0002.txt").unlink()
    (folder / "doc0002.txt.metadata.json").unlink()
    (folder / "doc0003.txt.metadata.json").write_text(
        '{"metadataAttributes": {"genre": "mystery", "rank": 3}}'
    )
    (folder / "fresh.md").write_text("# hello world\n\nthank you for the little model.")
    stats = sync(agent, kb_id, ds_id)["statistics"]
    assert stats["numberOfDocumentsScanned"] == 8
    assert stats["numberOfNewDocumentsIndexed"] == 1
    assert stats["numberOfModifiedDocumentsIndexed"] == 1
    assert stats["numberOfMetadataDocumentsModified"] == 1
    assert stats["numberOfDocumentsDeleted"] == 1
    assert stats["numberOfDocumentsFailed"] == 0
    gone = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": texts["doc0002.txt"]})[
        "retrievalResults"
    ]
    assert texts["doc0002.txt"] not in {r["content"]["text"] for r in gone}
    top = runtime.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": "quick brown fox jumps over the lazy dog once more today."},
    )["retrievalResults"][0]
    assert top["content"]["text"].startswith("quick brown fox jumps over the lazy dog once more")
    mystery = runtime.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": texts["doc0003.txt"]},
        retrievalConfiguration={
            "vectorSearchConfiguration": {"filter": {"equals": {"key": "genre", "value": "mystery"}}}
        },
    )["retrievalResults"]
    assert [r["content"]["text"] for r in mystery] == [texts["doc0003.txt"]]


def test_a_document_that_fails_to_parse_is_named_while_the_rest_ingest(kb_server: KBServer) -> None:
    agent = kb_server.agent()
    folder = kb_server.root / "bad-docs"
    write_corpus(folder, 3, seed=5, sidecar=False)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n%%EOF")
    (folder / "empty.txt").write_text("")
    (folder / "escape.txt").symlink_to("/etc/passwd")  # a link out of the allowed roots is never read
    kb_id = create_kb(agent, kb_server.embedder_arn, name="bad")
    ds_id = create_ds(agent, kb_id, folder)
    job = sync(agent, kb_id, ds_id)
    assert job["status"] == "COMPLETE"
    assert job["statistics"]["numberOfNewDocumentsIndexed"] == 3
    assert job["statistics"]["numberOfDocumentsFailed"] == 3
    reasons = " ".join(job["failureReasons"])
    assert "broken.pdf" in reasons and "empty.txt" in reasons
    assert "escape.txt links to /etc/passwd, outside the folders" in reasons
    again = sync(agent, kb_id, ds_id)  # failures are retried (still failing), indexed ones are not redone
    assert again["statistics"]["numberOfDocumentsFailed"] == 3
    assert again["statistics"]["numberOfNewDocumentsIndexed"] == 0


def test_wrong_models_unknown_knowledge_bases_and_bad_sources_answer_with_the_fix(
    kb_server: KBServer,
) -> None:
    agent, runtime = kb_server.agent(), kb_server.runtime()
    assert kb_server.text_model_arn is not None

    def create(model_arn: str) -> Any:
        return agent.create_knowledge_base(
            name="wrong-model",
            roleArn=ROLE_ARN,
            knowledgeBaseConfiguration={
                "type": "VECTOR",
                "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": model_arn},
            },
        )

    with pytest.raises(agent.exceptions.ValidationException, match=r"text-generation model.*embedding model"):
        create(kb_server.text_model_arn)
    with pytest.raises(agent.exceptions.ValidationException, match="does not name an imported model"):
        create("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0")
    with pytest.raises(agent.exceptions.ResourceNotFoundException, match="ABCDEFGHIJ"):
        agent.get_knowledge_base(knowledgeBaseId="ABCDEFGHIJ")
    with pytest.raises(runtime.exceptions.ResourceNotFoundException, match="ListKnowledgeBases"):
        runtime.retrieve(knowledgeBaseId="ABCDEFGHIJ", retrievalQuery={"text": "hello"})
    kb_id = create_kb(agent, kb_server.embedder_arn, name="sources")
    with pytest.raises(agent.exceptions.ValidationException, match="outside the folders"):
        agent.create_data_source(
            knowledgeBaseId=kb_id,
            name="etc",
            dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": "file:///etc"}},
        )
    with pytest.raises(agent.exceptions.ValidationException, match="no such folder"):
        agent.create_data_source(
            knowledgeBaseId=kb_id,
            name="missing",
            dataSourceConfiguration={
                "type": "S3",
                "s3Configuration": {"bucketArn": str(kb_server.root / "nope")},
            },
        )


@pytest.mark.postgres
def test_ingestion_and_retrieval_on_a_postgresql_metadata_store(
    start_server: Callable[..., ServerProcess], postgres_url: str, tmp_path: Path
) -> None:
    server = start_server(OUTCROP_DATABASE_URL=postgres_url)
    embedder = import_embedder(server, tmp_path)
    agent = boto3_client("bedrock-agent", server.url)
    runtime = boto3_client("bedrock-agent-runtime", server.url)
    folder = tmp_path / "pg-docs"
    texts = write_corpus(folder, 10, seed=9)
    kb_id = create_kb(agent, embedder, name="pg")
    ds_id = create_ds(agent, kb_id, folder)
    assert sync(agent, kb_id, ds_id)["statistics"]["numberOfNewDocumentsIndexed"] == 10
    (folder / "doc0000.txt").unlink()
    again = sync(agent, kb_id, ds_id)["statistics"]
    assert (again["numberOfDocumentsDeleted"], again["numberOfNewDocumentsIndexed"]) == (1, 0)
    top = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": texts["doc0005.txt"]})[
        "retrievalResults"
    ][0]
    assert top["content"]["text"] == texts["doc0005.txt"]


def test_hierarchical_and_semantic_chunking_through_a_sync(kb_server: KBServer) -> None:
    agent, runtime = kb_server.agent(), kb_server.runtime()
    folder = kb_server.root / "long-docs"
    folder.mkdir()
    paragraphs = [" ".join(sentence(random.Random(i), 12) for _ in range(8)) for i in range(3)]
    for i, text in enumerate(paragraphs):
        (folder / f"long{i}.txt").write_text(text)
    kb_id = create_kb(agent, kb_server.embedder_arn, name="chunked")
    hierarchical = create_ds(
        agent,
        kb_id,
        folder,
        name="hierarchical",
        chunking={
            "chunkingStrategy": "HIERARCHICAL",
            "hierarchicalChunkingConfiguration": {
                "levelConfigurations": [{"maxTokens": 120}, {"maxTokens": 30}],
                "overlapTokens": 5,
            },
        },
    )
    semantic = create_ds(
        agent,
        kb_id,
        folder,
        name="semantic",
        chunking={
            "chunkingStrategy": "SEMANTIC",
            "semanticChunkingConfiguration": {
                "maxTokens": 60,
                "bufferSize": 0,
                "breakpointPercentileThreshold": 80,
            },
        },
    )
    for ds_id in (hierarchical, semantic):
        job = sync(agent, kb_id, ds_id)
        assert (job["status"], job["statistics"]["numberOfNewDocumentsIndexed"]) == ("COMPLETE", 3), job
    first_sentence = paragraphs[0].split(".")[0] + "."
    results = runtime.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": first_sentence},
        retrievalConfiguration={
            "vectorSearchConfiguration": {
                "numberOfResults": 20,
                "filter": {"equals": {"key": "x-amz-bedrock-kb-data-source-id", "value": hierarchical}},
            }
        },
    )["retrievalResults"]
    # Children were embedded, parents come back: longer than a 30-token child, and slices of the text.
    assert results and all(r["content"]["text"] in " ".join(paragraphs) for r in results)
    assert max(len(r["content"]["text"]) for r in results) > len(first_sentence) * 2
    semantic_hits = runtime.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": first_sentence},
        retrievalConfiguration={
            "vectorSearchConfiguration": {
                "numberOfResults": 50,
                "filter": {"equals": {"key": "x-amz-bedrock-kb-data-source-id", "value": semantic}},
            }
        },
    )["retrievalResults"]
    assert len(semantic_hits) > 3  # several chunks per document, each a slice of its text
    assert all(r["content"]["text"] in " ".join(paragraphs) for r in semantic_hits)


def test_read_only_keys_read_and_invoke_only_keys_retrieve_but_neither_changes_anything(
    kb_server: KBServer,
) -> None:
    import boto3

    folder = kb_server.root / "auth-docs"
    texts = write_corpus(folder, 3, seed=13)
    admin = kb_server.agent()
    kb_id = create_kb(admin, kb_server.embedder_arn, name="guarded")
    ds_id = create_ds(admin, kb_id, folder)
    sync(admin, kb_id, ds_id)

    def as_key(service: str, policy: str, **extra: Any) -> Any:
        name = f"{policy}-{service}-{len(extra)}"
        made = api.post(f"{kb_server.url}/outcrop/keys", json={"name": name, "policy": policy, **extra})
        assert made.status_code < 300, made.text
        key = made.json()
        return boto3.client(
            service,
            endpoint_url=kb_server.url,
            region_name="us-east-1",
            aws_access_key_id=key["accessKeyId"],
            aws_secret_access_key=key["secretAccessKey"],
        )

    reader = as_key("bedrock-agent", "read-only")
    assert reader.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["name"] == "guarded"
    assert reader.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJobSummaries"]
    with pytest.raises(
        reader.exceptions.AccessDeniedException,
        match=f"bedrock:StartIngestionJob on resource: .*knowledge-base/{kb_id}",
    ):
        reader.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    runtime_reader = as_key("bedrock-agent-runtime", "read-only")
    with pytest.raises(runtime_reader.exceptions.AccessDeniedException, match="bedrock:Retrieve"):
        runtime_reader.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "x"})

    querier = as_key("bedrock-agent-runtime", "invoke-only")
    top = querier.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": texts["doc0001.txt"]})[
        "retrievalResults"
    ][0]
    assert top["content"]["text"] == texts["doc0001.txt"]
    invoker = as_key("bedrock-agent", "invoke-only")
    with pytest.raises(invoker.exceptions.AccessDeniedException, match="bedrock:DeleteKnowledgeBase"):
        invoker.delete_knowledge_base(knowledgeBaseId=kb_id)
    scoped = as_key("bedrock-agent-runtime", "invoke-only", models=["kb-embed"])
    with pytest.raises(scoped.exceptions.AccessDeniedException, match="bedrock:Retrieve"):
        scoped.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "x"})
