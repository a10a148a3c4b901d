"""Retrieve latency and ANN recall of the embedded vector store (issue 18) at 100k chunks.

    .venv/bin/python benchmarks/retrieval.py
    .venv/bin/python benchmarks/retrieval.py --chunks 20000 --queries 100   # a quick run

It fills one knowledge base of :class:`outcrop.knowledge.store.LanceVectorStore` (a temporary
local folder) with generated chunks, as ingestion would, in batches of 2,000:

- vectors: unit vectors of ``--dim`` dimensions drawn around 1,000 random topic centres (cosine ~0.45 to their centre; real
  embeddings cluster by topic; uniform random vectors would be an unrealistically hard case),
- text: 40 words from a 5,000-word vocabulary, biased to the chunk's topic (for BM25),
- metadata: ``category`` (10 values) and ``year`` (25 values).

Then, for ``--queries`` new query vectors drawn the same way (none equal to a chunk), it times
``search()`` as Retrieve calls it: SEMANTIC (the ANN index), HYBRID (ANN + BM25, fused),
SEMANTIC with a metadata filter, and the same search made exact by numpy brute force over all
vectors in memory (the reference: what a "Python loop over arrays" costs at its best). recall@10
is the share of the exact top 10 that the ANN search returns. Goal: recall@10 >= 0.95 and Retrieve
well under the exact scan. It prints the machine's load average, as the machines are noisy.
Never run as a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from outcrop.knowledge.store import LanceVectorStore  # noqa: E402
from outcrop.knowledge.types import Chunk  # noqa: E402

KB = "bench"
TOPICS = 1_000
VOCABULARY = 5_000
BATCH = 2_000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def generate(
    n: int, dim: int, rng: np.random.Generator, centres: np.ndarray, spread: float
) -> tuple[np.ndarray, np.ndarray]:
    topics = rng.integers(0, TOPICS, size=n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * spread
    return _unit(centres[topics] + noise).astype(np.float32), topics


def words_for(topic: int, rng: np.random.Generator, vocabulary: list[str]) -> str:
    own = [vocabulary[(topic * 5 + j) % VOCABULARY] for j in range(5)]
    picks = [
        own[rng.integers(0, 5)] if rng.random() < 0.3 else vocabulary[rng.integers(0, VOCABULARY)]
        for _ in range(40)
    ]
    return " ".join(picks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--chunks", type=int, default=100_000, help="chunks in the knowledge base (default 100000)"
    )
    parser.add_argument("--dim", type=int, default=384, help="embedding dimensions (default 384, MiniLM's)")
    parser.add_argument(
        "--queries", type=int, default=200, help="timed queries per search type (default 200)"
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=0.1,
        help="per-dimension noise around a topic centre (default 0.1: cosine ~0.45 to the centre at 384 dims; "
        "0.35 is nearly uniform random vectors, the ANN index's hardest case)",
    )
    parser.add_argument("--k", type=int, default=10, help="numberOfResults (default 10)")
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    centres = _unit(rng.standard_normal((TOPICS, args.dim)).astype(np.float32))
    vocabulary = [f"w{i:04d}{chr(97 + i % 26)}" for i in range(VOCABULARY)]
    vectors, topics = generate(args.chunks, args.dim, rng, centres, args.spread)
    queries, query_topics = generate(args.queries, args.dim, rng, centres, args.spread)

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="outcrop-retrieval-") as folder:
        store = LanceVectorStore(folder)
        store.create(KB, args.dim)
        started = time.perf_counter()
        for start in range(0, args.chunks, BATCH):
            stop = min(args.chunks, start + BATCH)
            store.upsert(
                KB,
                [
                    Chunk(
                        chunk_id=f"c{i}",
                        data_source_id="ds",
                        source_uri=f"s3://bench/doc{i // 20}.txt",
                        text=words_for(int(topics[i]), rng, vocabulary),
                        vector=vectors[i],
                        metadata={"category": f"cat{i % 10}", "year": 2000 + i % 25},
                    )
                    for i in range(start, stop)
                ],
            )
        filled = time.perf_counter() - started
        print(
            f"filled {store.count(KB):,} chunks of {args.dim} dims in {filled:.1f} s (indexes kept current as it went)"
        )

        def timed(search_type: str, filter_: dict | None) -> tuple[list[float], list[list[str]]]:
            seconds, ids = [], []
            for q, topic in zip(queries, query_topics, strict=True):
                text = " ".join(vocabulary[(int(topic) * 5 + j) % VOCABULARY] for j in range(3))
                t0 = time.perf_counter()
                hits = store.search(
                    KB, vector=q, text=text, k=args.k, filter=filter_, search_type=search_type
                )  # type: ignore[arg-type]
                seconds.append(time.perf_counter() - t0)
                ids.append([h.chunk_id for h in hits])
            return seconds, ids

        timed("SEMANTIC", None)  # warm the caches once
        semantic, ann_ids = timed("SEMANTIC", None)
        hybrid, _ = timed("HYBRID", None)
        filtered, _ = timed("SEMANTIC", {"equals": {"key": "category", "value": "cat3"}})

        exact_seconds, recalls = [], []
        for q, got in zip(queries, ann_ids, strict=True):
            t0 = time.perf_counter()
            top = np.argpartition(-(vectors @ q), args.k)[: args.k]
            exact_seconds.append(time.perf_counter() - t0)
            truth = {f"c{i}" for i in top}
            recalls.append(len(truth & set(got)) / args.k)

    def row(name: str, values: list[float]) -> str:
        return f"{name:<34} p50 {statistics.median(values) * 1e3:7.2f} ms   p95 {_percentile(values, 0.95) * 1e3:7.2f} ms"

    print()
    print(f"{args.chunks:,} chunks, {args.queries} queries, top {args.k}, spread {args.spread}")
    print(row("Retrieve SEMANTIC (ANN index)", semantic))
    print(row("Retrieve HYBRID (ANN + BM25)", hybrid))
    print(row("Retrieve SEMANTIC + filter", filtered))
    print(row("exact numpy scan (reference)", exact_seconds))
    recall = statistics.mean(recalls)
    print(
        f"recall@{args.k} of the ANN search vs exact: {recall:.3f}  (goal >= 0.95: {'met' if recall >= 0.95 else 'NOT met'})"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
