"""Ingestion's embedding calls (the Embedder, fed a serving facade through its seam): at most
``embedding_concurrency`` in flight, batch priority, backoff and retry on throttling and cold copies,
no retry of a request the model refuses, and queries at online priority outside the ingestion slots."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError, ModelNotReadyError, ThrottlingError
from outcrop.knowledge.ingestion import Embedder
from outcrop.serving.routing import EMBEDDINGS_PATH, Priority


class FakeServing:
    """Answers /v1/embeddings like a copy, after ``failures`` retryable errors; records what it saw."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = list(failures or [])
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls: list[tuple[str, str, dict[str, Any], Priority]] = []

    async def post(
        self, model: str, path: str, body: dict[str, Any], *, cold_start: Any, priority: Priority
    ) -> dict[str, Any]:
        self.calls.append((model, path, body, priority))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if self.failures:
                raise self.failures.pop(0)
            return {
                "data": [
                    {"index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(body["input"])
                ][::-1]
            }
        finally:
            self.in_flight -= 1


def embedder(serving: FakeServing, **knowledge: Any) -> Embedder:
    settings = {"embedding_backoff_seconds": 0.01, "embedding_max_backoff_seconds": 0.02, **knowledge}
    return Embedder(OutcropConfig(knowledge=settings), serving)


def test_calls_are_bounded_and_sent_at_batch_priority_with_vectors_in_input_order() -> None:
    serving = FakeServing()
    e = embedder(serving, embedding_concurrency=3)

    async def run() -> list[list[list[float]]]:
        return await asyncio.gather(*(e.embed("m", ["a", "bb", "ccc"]) for _ in range(12)))

    results = asyncio.run(run())
    assert serving.most_in_flight == 3
    assert all(r == [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]] for r in results)  # sorted back by index
    assert {(c[1], c[3]) for c in serving.calls} == {(EMBEDDINGS_PATH, Priority.BATCH)}
    assert serving.calls[0][2] == {"input": ["a", "bb", "ccc"], "encoding_format": "float"}


def test_throttling_and_a_cold_copy_are_retried_with_backoff() -> None:
    serving = FakeServing(
        [
            ThrottlingError("slow down", retry_after_seconds=0.01),
            ModelNotReadyError("m", retry_after_seconds=0.01),
        ]
    )
    e = embedder(serving)
    assert asyncio.run(e.embed("m", ["x"], dimensions=16)) == [[1.0, 1.0]]
    assert len(serving.calls) == 3 and e.retries == 2
    assert serving.calls[-1][2]["dimensions"] == 16


def test_retries_end_after_the_configured_attempts_and_a_refusal_is_not_retried() -> None:
    serving = FakeServing([ThrottlingError("busy", retry_after_seconds=0.01)] * 5)
    with pytest.raises(ThrottlingError):
        asyncio.run(embedder(serving, embedding_max_attempts=3).embed("m", ["x"]))
    assert len(serving.calls) == 3
    refused = FakeServing([InvalidRequestError("too long")])
    with pytest.raises(InvalidRequestError):
        asyncio.run(embedder(refused).embed("m", ["x"]))
    assert len(refused.calls) == 1


def test_a_query_goes_at_online_priority_even_while_ingestion_holds_every_slot() -> None:
    serving = FakeServing()
    e = embedder(serving, embedding_concurrency=1)

    async def run() -> list[list[float]]:
        async with e._slots:  # ingestion holds the only slot
            return await asyncio.wait_for(e.embed("m", ["q"], priority=Priority.ONLINE), timeout=5)

    assert asyncio.run(run()) == [[1.0, 1.0]]
    assert serving.calls[-1][3] == Priority.ONLINE
