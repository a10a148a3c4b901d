"""Knowledge-base ingestion: documents/s and chunks/s vs the embedding model's in-process throughput
on the same chunks, and a kill -9 / resume check.

    .venv/bin/python benchmarks/ingestion.py                 # 2,000 documents, ~5 MB
    .venv/bin/python benchmarks/ingestion.py --docs 200      # a quick run
    .venv/bin/python benchmarks/ingestion.py --docs 200 --no-kill-check

It generates a corpus of ``--docs`` text documents (~2.5 KB each, sentences of words the tiny
tokenizer spells out; every fourth with a ``.metadata.json`` sidecar) and builds a random-weight
BERT-shaped sentence-transformers model (hidden 256, 6 layers by default, max 128 tokens), then

1. ingests the corpus through ``outcrop serve``: the model imported with boto3, one copy warmed,
   a knowledge base with a folder data source (FIXED_SIZE, 100 tokens, 10 % overlap), one
   StartIngestionJob timed from start to COMPLETE (scan, hash, parse, chunk, embed through the
   router at batch priority, write to the embedded LanceDB store, record);
2. embeds the very same chunks in-process with sentence-transformers' ``encode`` (batch 32), the
   yardstick of what the embedder can do on this machine (the server is stopped meanwhile);
3. (unless ``--no-kill-check``) ingests the corpus into a second knowledge base, ``kill -9`` s the
   server a third of the way through, restarts it on the same data dir and checks the resumed
   job counts every document once and the store holds exactly the expected chunks.

It prints documents/s, chunks/s, the ratio to in-process (goal, issue 18: >= 0.8x: the pipeline
keeps the embedder busy) and the load average before and after (a shared machine skews both sides).
Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# The same generated vocabulary, and the same boto3 import + warm-up of the embedding model.
from benchmarks.embeddings_throughput import WORDS, import_and_warm  # noqa: E402

MODEL_NAME = "ingest-bench"
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "BENCHKEY", "bench-secret"
API_KEY = "bench-api-key-0123456789"
ROLE_ARN = "arn:aws:iam::123456789012:role/Bench"
CHUNKING = {
    "chunkingStrategy": "FIXED_SIZE",
    "fixedSizeChunkingConfiguration": {"maxTokens": 100, "overlapPercentage": 10},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_corpus(folder: Path, docs: int, doc_bytes: int, seed: int = 7) -> int:
    """``docs`` .txt documents of about ``doc_bytes`` each; returns the corpus size in bytes."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    total = 0
    for i in range(docs):
        sentences: list[str] = []
        size = 0
        while size < doc_bytes:
            s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
            sentences.append(s)
            size += len(s) + 1
        text = " ".join(sentences)
        (folder / f"doc{i:05d}.txt").write_text(text)
        total += len(text)
        if i % 4 == 0:
            sidecar = {"metadataAttributes": {"team": rng.choice(["red", "blue"]), "rank": i}}
            (folder / f"doc{i:05d}.txt.metadata.json").write_text(json.dumps(sidecar))
    return total


def local_chunks(folder: Path, model_folder: Path) -> list[str]:
    """The chunks the server makes of the corpus (same parser, chunker and tokenizer)."""
    from transformers import AutoTokenizer

    from outcrop.knowledge.chunking import chunk_text
    from outcrop.knowledge.parsing import parse_document

    tokenizer = AutoTokenizer.from_pretrained(str(model_folder))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    chunks: list[str] = []
    for path in sorted(folder.glob("*.txt")):
        chunks += [c.text for c in chunk_text(parse_document(path).text, CHUNKING, count)]
    return chunks


class Gateway:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
        env.update(
            {
                "OUTCROP_THROTTLING__ENABLED": "false",
                "OUTCROP_REGISTRY__ALLOWED_ROOTS": json.dumps([str(self.root)]),
                "OUTCROP_SERVER__LOG_LEVEL": "warning",
                "OUTCROP_STORE__JOB_LEASE_SECONDS": "5",  # a killed server's job is taken over quickly
                "OUTCROP_AUTH__BOOTSTRAP_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "OUTCROP_AUTH__BOOTSTRAP_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
                "OUTCROP_AUTH__BOOTSTRAP_API_KEY": API_KEY,
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        cmd = [
            sys.executable,
            "-m",
            "outcrop",
            "--data-dir",
            str(self.root / "data"),
            "serve",
            "--port",
            str(self.port),
        ]
        log = open(self.root / "gateway.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the gateway exited: {(self.root / 'gateway.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("the gateway did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(retries={"max_attempts": 8, "mode": "standard"}),
        )


def knowledge_base(agent: Any, name: str, model_arn: str, corpus: Path) -> tuple[str, str]:
    kb_id = agent.create_knowledge_base(
        name=name,
        roleArn=ROLE_ARN,
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": model_arn},
        },
    )["knowledgeBase"]["knowledgeBaseId"]
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id,
        name="corpus",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": corpus.as_uri()}},
        vectorIngestionConfiguration={"chunkingConfiguration": CHUNKING},
    )["dataSource"]["dataSourceId"]
    return kb_id, ds_id


def poll(agent: Any, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = agent.get_ingestion_job(
        knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id
    )["ingestionJob"]
    return job


def wait(agent: Any, kb_id: str, ds_id: str, job_id: str, timeout: float = 3600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = poll(agent, kb_id, ds_id, job_id)
        if job["status"] in ("COMPLETE", "FAILED", "STOPPED"):
            return job
        time.sleep(0.2)
    raise SystemExit(f"ingestion job {job_id} did not finish")


def chunk_count(root: Path, kb_id: str) -> int:
    from outcrop.knowledge.store import open_store

    return open_store(str(root / "data" / "knowledge")).count(kb_id)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=2000, help="Documents in the generated corpus.")
    p.add_argument("--doc-bytes", type=int, default=2500, help="Approximate size of each document.")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' encode batch size.")
    p.add_argument("--no-kill-check", action="store_true", help="Skip the kill -9 / resume check.")
    args = p.parse_args()

    from outcrop.testing.tiny_embedders import build_tiny_embedder

    root = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    gateway = Gateway(root)
    load_before = os.getloadavg()
    try:
        model_folder = build_tiny_embedder(
            root / "model",
            family="bert",
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=args.hidden * 4,
            max_seq_length=128,
        )
        corpus = root / "corpus"
        size = make_corpus(corpus, args.docs, args.doc_bytes)
        chunks = local_chunks(corpus, model_folder)

        gateway.start()
        model_arn = import_and_warm(gateway.url, model_folder, MODEL_NAME)
        agent = gateway.client("bedrock-agent")
        kb_id, ds_id = knowledge_base(agent, "bench", model_arn, corpus)
        began = time.perf_counter()
        job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"][
            "ingestionJobId"
        ]
        job = wait(agent, kb_id, ds_id, job_id)
        took = time.perf_counter() - began
        load_during = os.getloadavg()
        if job["status"] != "COMPLETE":
            raise SystemExit(f"ingestion ended {job['status']}: {job.get('failureReasons')}")
        gateway.stop()
        stored = chunk_count(root, kb_id)

        from sentence_transformers import SentenceTransformer

        st_model = SentenceTransformer(str(model_folder), device="cpu")
        st_model.encode(chunks[: args.batch_size], batch_size=args.batch_size)  # warm up
        t0 = time.perf_counter()
        st_model.encode(chunks, batch_size=args.batch_size)
        reference = len(chunks) / (time.perf_counter() - t0)

        stats = job["statistics"]
        print(
            f"corpus: {args.docs} documents, {size / 1e6:.1f} MB, {len(chunks)} chunks (FIXED_SIZE 100 tokens, 10 %); "
            f"model: BERT-shaped, hidden {args.hidden}, {args.layers} layers; {os.cpu_count()} CPUs"
        )
        print(f"job statistics: {json.dumps(stats)}; chunks in the store: {stored}")
        pipeline = len(chunks) / took
        print(
            f"{'ingestion through outcrop serve (StartIngestionJob -> COMPLETE)':<66} {args.docs / took:8.1f} docs/s  {pipeline:8.1f} chunks/s  ({took:.1f} s)"
        )
        print(
            f"{'in-process sentence-transformers encode, same chunks (batch ' + str(args.batch_size) + ')':<66} {'':>15} {reference:8.1f} chunks/s"
        )
        print(f"ratio {pipeline / reference:.3f}x (goal >= 0.8x)")
        ok = stored == len(chunks) and stats["numberOfNewDocumentsIndexed"] == args.docs
        print(f"every chunk stored once: {'yes' if ok else 'NO'}")

        if not args.no_kill_check:
            gateway.start()
            agent = gateway.client("bedrock-agent")
            kb2, ds2 = knowledge_base(agent, "bench-killed", model_arn, corpus)
            job_id = agent.start_ingestion_job(knowledgeBaseId=kb2, dataSourceId=ds2)["ingestionJob"][
                "ingestionJobId"
            ]
            while True:
                job = poll(agent, kb2, ds2, job_id)
                done = job["statistics"]["numberOfNewDocumentsIndexed"]
                if done >= args.docs // 3 or (job["status"] != "IN_PROGRESS" and job["status"] != "STARTING"):
                    break
                time.sleep(0.05)
            killed_at = job["statistics"]["numberOfNewDocumentsIndexed"]
            gateway.stop(signal.SIGKILL)
            gateway.start()
            agent = gateway.client("bedrock-agent")
            resumed = wait(agent, kb2, ds2, job_id)
            gateway.stop()
            stored2 = chunk_count(root, kb2)
            new = resumed["statistics"]["numberOfNewDocumentsIndexed"]
            good = resumed["status"] == "COMPLETE" and new == args.docs and stored2 == len(chunks)
            print(
                f"kill -9 at {killed_at}/{args.docs} documents indexed; resumed: {resumed['status']}, "
                f"{new} documents counted, {stored2} chunks stored (expected {len(chunks)}): "
                f"{'nothing lost or duplicated' if good else 'MISMATCH'}"
            )
        load_after = os.getloadavg()
        print(
            "load average (1/5/15 min): before "
            + " ".join(f"{x:.2f}" for x in load_before)
            + ", end of ingestion "
            + " ".join(f"{x:.2f}" for x in load_during)
            + ", after "
            + " ".join(f"{x:.2f}" for x in load_after)
        )
    finally:
        gateway.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
