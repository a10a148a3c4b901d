"""Embeddings/s through the gateway at concurrency 32 vs the same model batched in-process.

    .venv/bin/python benchmarks/embeddings_throughput.py
    .venv/bin/python benchmarks/embeddings_throughput.py --texts 512 --hidden 768 --layers 12

It builds a random-weight BERT-shaped sentence-transformers folder (default: hidden 256,
6 layers, 8 heads, intermediate 1024, mean pooling, normalized; a locally trained
tokenizer), then embeds the same generated texts

1. in-process with sentence-transformers' own ``encode`` (batch_size 32): the yardstick;
2. through ``outcrop serve``: the model imported with boto3, one embedding copy warmed, and
   32 clients each POSTing one text per request to OpenAI's ``/v1/embeddings`` (base64, as the
   openai SDK asks) back to back until every text is embedded; the copy batches what arrives.

It prints embeddings/s of each and the ratio (goal, issue 18: >= 0.85x). Both sides use
torch's default threads on the same machine; the gateway runs with throttling off and a
per-copy cap of 32 (the default 16 would hold half the clients in the gateway's queue), one
copy (the default max_copies). Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
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

MODEL_NAME = "embed-bench"
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "BENCHKEY", "bench-secret"
API_KEY = "bench-api-key-0123456789"
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "outcrop",
    "imports",
    "fine",
    "tuned",
    "models",
    "and",
    "serves",
    "them",
    "behind",
    "bedrock",
    "openai",
    "apis",
    "hello",
    "world",
    "how",
    "are",
    "you",
    "today",
    "once",
    "upon",
    "a",
    "time",
    "there",
    "was",
    "little",
    "model",
    "that",
    "wanted",
    "to",
    "generate",
    "text",
    "machine",
    "learning",
    "inference",
    "needs",
    "fast",
    "stable",
    "service",
    "select",
    "name",
    "value",
    "from",
    "settings",
    "where",
    "id",
    "import",
    "torch",
    "print",
    "shape",
    "retrieval",
    "augmented",
    "generation",
    "knowledge",
    "base",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 48))) for _ in range(n)]


def in_process(model: Any, texts: list[str], batch_size: int) -> float:
    began = time.perf_counter()
    model.encode(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - began)


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        return status, await self.reader.readexactly(length)


async def through_gateway(port: int, texts: list[str], concurrency: int, per_request: int = 1) -> float:
    conns = [Connection("127.0.0.1", port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))

    def body(text: str | list[str]) -> bytes:
        return json.dumps({"model": MODEL_NAME, "input": text, "encoding_format": "base64"}).encode()

    async def warm(conn: Connection) -> None:  # all at once: an idle keep-alive connection closes after 5 s
        status, answer = await conn.post("/v1/embeddings", body("warm up"))
        if status != 200:
            raise SystemExit(f"warm-up failed: {status} {answer[:300]!r}")

    await asyncio.gather(*(warm(c) for c in conns))
    queue = [texts[i : i + per_request] for i in range(0, len(texts), per_request)][::-1]
    failures: list[str] = []

    async def client(conn: Connection) -> None:
        while queue:
            group = queue.pop()
            status, answer = await conn.post("/v1/embeddings", body(group[0] if per_request == 1 else group))
            if status != 200:
                failures.append(f"{status} {answer[:200]!r}")

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    took = time.perf_counter() - began
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return len(texts) / took


def start_gateway(root: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    env.update(
        {
            "OUTCROP_THROTTLING__ENABLED": "false",
            "OUTCROP_SERVING__DEFAULTS__MAX_CONCURRENCY_PER_COPY": "32",
            "OUTCROP_REGISTRY__ALLOWED_ROOTS": json.dumps([str(root)]),
            "OUTCROP_SERVER__LOG_LEVEL": "warning",
            "OUTCROP_AUTH__BOOTSTRAP_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "OUTCROP_AUTH__BOOTSTRAP_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "OUTCROP_AUTH__BOOTSTRAP_API_KEY": API_KEY,
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    cmd = [sys.executable, "-m", "outcrop", "--data-dir", str(root / "data"), "serve", "--port", str(port)]
    log = open(root / "gateway.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited: {(root / 'gateway.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the gateway did not become healthy")


def import_and_warm(url: str, folder: Path, name: str = MODEL_NAME) -> str:
    """Import ``folder`` as ``name`` with boto3, wait for it, warm one copy; returns the model ARN."""
    import boto3

    bedrock = boto3.client(
        "bedrock",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    arn = bedrock.create_model_import_job(
        jobName=f"{name}-import",
        importedModelName=name,
        roleArn="arn:aws:iam::123456789012:role/Bench",
        modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
    )["jobArn"]
    while (job := bedrock.get_model_import_job(jobIdentifier=arn))["status"] == "InProgress":
        time.sleep(0.2)
    if job["status"] != "Completed":
        raise SystemExit(f"import failed: {job.get('failureMessage')}")
    warm = httpx.post(
        f"{url}/outcrop/models/{name}/warm",
        json={"copies": 1},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=300,
    )
    if warm.status_code != 200:
        raise SystemExit(f"warm-up failed: {warm.text}")
    return str(job["importedModelArn"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=512, help="Texts to embed (8-48 words each).")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' encode batch size.")
    p.add_argument(
        "--per-request",
        type=int,
        nargs="+",
        default=[1, 16],
        help="Texts per request for the gateway rows (1: one text each; 16: batched as LangChain's "
        "embed_documents does); one row per value.",
    )
    p.add_argument("--rounds", type=int, default=2, help="Alternating in-process / gateway rounds (mean).")
    args = p.parse_args()

    from outcrop.testing.tiny_embedders import build_tiny_embedder

    root = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        folder = build_tiny_embedder(
            root / "model",
            family="bert",
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=args.hidden * 4,
            max_seq_length=128,
        )
        texts = make_texts(args.texts)
        port = free_port()
        proc = start_gateway(root, port)
        url = f"http://127.0.0.1:{port}"
        import_and_warm(url, folder)
        from sentence_transformers import SentenceTransformer

        st_model = SentenceTransformer(str(folder), device="cpu")
        st_model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm up
        # Alternating rounds, so that load from other processes on a shared machine hits both sides.
        references: list[float] = []
        gateways: dict[int, list[float]] = {n: [] for n in args.per_request}
        for _ in range(args.rounds):
            references.append(in_process(st_model, texts, args.batch_size))
            for n in args.per_request:
                gateways[n].append(asyncio.run(through_gateway(port, texts, args.concurrency, n)))
        reference = sum(references) / len(references)
        print(
            f"model: BERT-shaped, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, mean pooling; "
            f"{args.texts} texts of 8-48 words; {os.cpu_count()} CPUs; {args.rounds} alternating rounds (mean)"
        )
        label = f"in-process sentence-transformers encode (batch {args.batch_size})"
        print(f"{label:<62} {reference:8.1f} emb/s  {', '.join(f'{r:.1f}' for r in references)}")
        for n, runs in gateways.items():
            mean = sum(runs) / len(runs)
            label = f"gateway /v1/embeddings, {args.concurrency} clients, {n} text(s)/request"
            print(
                f"{label:<62} {mean:8.1f} emb/s  {', '.join(f'{r:.1f}' for r in runs)}  "
                f"ratio {mean / reference:.3f}x (goal >= 0.85x)"
            )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
