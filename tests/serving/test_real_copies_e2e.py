"""Outcrop's own worker as the copy: started by the ``local`` launcher and through a ``command`` template."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.registry.service import Registry
from outcrop.serving.service import ColdStartPolicy
from tests.serving.conftest import running

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HOLD = ColdStartPolicy(wait=True, max_wait_seconds=120)
WORKER_LIMITS = ["--max-model-len", "256", "--kv-cache-bytes", str(64 * 2**20)]


async def _exercise(config: OutcropConfig, registry: Registry) -> None:
    async with running(config, registry) as serving:
        done = await serving.post(
            "alpha",
            "/v1/completions",
            {"prompt": "Hello", "max_tokens": 5, "temperature": 0},
            cold_start=HOLD,
        )
        assert done["model"] == "alpha" and done["usage"]["completion_tokens"] >= 1
        chunks = [
            c
            async for c in serving.stream(
                "alpha",
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0},
                cold_start=HOLD,
            )
        ]
        assert chunks and chunks[0]["object"] == "chat.completion.chunk"
        with pytest.raises(InvalidRequestError, match="max_tokens"):
            await serving.post(
                "alpha", "/v1/completions", {"prompt": "Hello", "max_tokens": 10_000}, cold_start=HOLD
            )
        tokens = await serving.post("alpha", "/v1/tokenize", {"prompt": "Hello"}, cold_start=HOLD)
        assert tokens["count"] >= 1
        (copy,) = serving.copies()
        assert copy.state.value == "Ready" and serving.stats()["models"]["alpha"]["cold_starts"] == 1


async def test_local_launcher_serves_the_imported_model_with_outcrops_worker(
    serving_config: Callable[..., OutcropConfig], serving_registry: Registry
) -> None:
    config = serving_config(**{"serving.launcher": "local", "serving.worker_extra_args": WORKER_LIMITS})
    await _exercise(config, serving_registry)


async def test_command_launcher_serves_through_a_template_of_outcrops_worker(
    serving_config: Callable[..., OutcropConfig], serving_registry: Registry
) -> None:
    template = (
        f"{sys.executable} -m outcrop.engine.worker --model-dir {{model_dir}} --port {{port}} --host {{host}} "
        f"--served-name {{served_name}} {' '.join(WORKER_LIMITS)}"
    )
    config = serving_config(
        **{"serving.command_template": template, "serving.command_health_path": "/health"}
    )
    await _exercise(config, serving_registry)
