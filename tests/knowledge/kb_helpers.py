"""Shared pieces of the knowledge-base e2e tests: a server with a tiny random-weight embedding model,
corpora of documents the tiny tokenizer reads, and waiting for ingestion jobs."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess, api, boto3_client, import_and_wait

ROLE_ARN = "arn:aws:iam::123456789012:role/KnowledgeBases"
# Lower-case letters only: the tiny WordPiece vocabulary spells them out, so every text gets its
# own tokens (digits and capitals would all be [UNK]).
WORDS = [
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "hello",
    "world",
    "import",
    "model",
    "torch",
    "bedrock",
    "outcrop",
    "openai",
    "serves",
    "settings",
    "shape",
    "value",
    "where",
    "today",
    "time",
    "little",
    "more",
    "name",
    "once",
    "upon",
    "generate",
    "return",
    "select",
    "thank",
    "behind",
    "emoji",
    "tuned",
    "wanted",
    "text",
    "test",
    "there",
    "them",
    "than",
    "that",
    "from",
    "how",
]


@dataclass
class KBServer:
    server: ServerProcess
    root: Path
    embedder_arn: str
    text_model_arn: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def agent(self) -> Any:
        return boto3_client("bedrock-agent", self.url)

    def runtime(self) -> Any:
        return boto3_client("bedrock-agent-runtime", self.url)


def import_embedder(server: ServerProcess, root: Path, name: str = "kb-embed", warm: bool = True) -> str:
    from outcrop.testing.tiny_embedders import build_tiny_embedder

    folder = root / name
    if not folder.exists():
        build_tiny_embedder(folder, family="bert")
    arn: str = import_and_wait(boto3_client("bedrock", server.url), folder, name)["importedModelArn"]
    if warm:
        response = api.post(f"{server.url}/outcrop/models/{name}/warm", json={"copies": 1}, timeout=180)
        assert response.status_code == 200, response.text
    return arn


def sentence(rng: random.Random, words: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def write_corpus(folder: Path, count: int, *, seed: int = 0, sidecar: bool = True) -> dict[str, str]:
    """``count`` one-paragraph .txt documents (with genre sidecars); returns name -> text."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts: dict[str, str] = {}
    for i in range(count):
        name = f"doc{i:04d}.txt"
        text = sentence(rng, 10 + i % 7)
        (folder / name).write_text(text)
        if sidecar:
            genre = "drama" if i % 2 else "comedy"
            (folder / f"{name}.metadata.json").write_text(
                json.dumps({"metadataAttributes": {"genre": genre, "rank": i}})
            )
        texts[name] = text
    return texts


def create_kb(agent: Any, embedder_arn: str, name: str = "docs") -> str:
    made = agent.create_knowledge_base(
        name=name,
        roleArn=ROLE_ARN,
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": embedder_arn},
        },
    )["knowledgeBase"]
    assert made["status"] == "ACTIVE", made
    kb_id: str = made["knowledgeBaseId"]
    return kb_id


def create_ds(
    agent: Any, kb_id: str, folder: Path, *, name: str = "folder", chunking: dict[str, Any] | None = None
) -> str:
    made = agent.create_data_source(
        knowledgeBaseId=kb_id,
        name=name,
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": folder.as_uri()}},
        vectorIngestionConfiguration={"chunkingConfiguration": chunking or {"chunkingStrategy": "NONE"}},
    )["dataSource"]
    ds_id: str = made["dataSourceId"]
    return ds_id


def sync(agent: Any, kb_id: str, ds_id: str, timeout: float = 120) -> dict[str, Any]:
    job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    return wait_job(agent, kb_id, ds_id, job["ingestionJobId"], timeout)


def wait_job(agent: Any, kb_id: str, ds_id: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = agent.get_ingestion_job(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id
        )["ingestionJob"]
        if job["status"] in ("COMPLETE", "FAILED", "STOPPED"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"ingestion job {job_id} did not finish in {timeout} s")


def chunk_count(data_dir: Path, kb_id: str) -> int:
    """Rows in the knowledge base's table of the embedded vector store (read directly, server stopped)."""
    from outcrop.knowledge.store import open_store

    return open_store(str(data_dir / "knowledge")).count(kb_id)
