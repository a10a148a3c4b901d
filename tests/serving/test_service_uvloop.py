"""The serving path under uvloop, the event loop uvicorn picks for ``outcrop serve``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from outcrop.config import OutcropConfig
from outcrop.registry.service import Registry
from outcrop.serving.service import ColdStartPolicy
from tests.serving.conftest import running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": True})


async def test_cold_start_request_and_stream_under_uvloop(
    serving_config: Callable[..., OutcropConfig], serving_registry: Registry
) -> None:
    async with running(serving_config(), serving_registry) as serving:
        hold = ColdStartPolicy(wait=True, max_wait_seconds=30)
        answer = await serving.post("alpha", "/v1/completions", {"prompt": "x"}, cold_start=hold)
        assert answer["choices"][0]["text"] == "null copy answer"
        chunks = [
            c async for c in serving.stream("alpha", "/v1/completions", {"prompt": "x"}, cold_start=hold)
        ]
        assert len(chunks) == 3
        assert [c.state.value for c in serving.copies()] == ["Ready"]
