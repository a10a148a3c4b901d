"""Pinned copies: an owner (a SageMaker endpoint variant or inference component) keeps copies of a
model running through idle windows and memory pressure until it lets go (real null copies)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from outcrop.config import OutcropConfig
from outcrop.errors import ServiceUnavailableError
from outcrop.registry.service import Registry
from tests.serving.conftest import running
from tests.serving.test_service import HOLD, PROMPT, eventually

pytestmark = pytest.mark.anyio

Config = Callable[..., OutcropConfig]
IDLE = {"serving.defaults.idle_seconds_before_scale_down": 0.3, "serving.defaults.max_copies": 2}


def names(serving: object) -> list[str]:
    return sorted(c.model_name for c in serving.copies())  # type: ignore[attr-defined]


async def test_a_pinned_copy_outlives_the_idle_window_and_unpin_lets_it_scale_to_zero(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config(**IDLE), serving_registry) as serving:
        await serving.pin("endpoint/a", "alpha", 1)
        await eventually(lambda: names(serving) == ["alpha"])  # the autoscaler starts it, unasked
        await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
        await asyncio.sleep(1.5)  # five idle windows
        assert names(serving) == ["alpha"]
        serving.unpin("endpoint/a")
        await eventually(lambda: names(serving) == [])


async def test_pins_of_one_model_add_up_within_max_copies_and_release_one_by_one(
    serving_config: Config, serving_registry: Registry
) -> None:
    async with running(serving_config(**IDLE), serving_registry) as serving:
        await serving.pin("endpoint/a", "alpha", 1)
        await serving.pin("component/b", "alpha", 5)  # 6 asked, max_copies 2 bounds it
        await eventually(lambda: names(serving) == ["alpha", "alpha"])
        assert serving.controller.pinned_copies(serving_registry.get_model("alpha").id) == 6
        serving.unpin("component/b")
        await eventually(lambda: names(serving) == ["alpha"])
        await asyncio.sleep(1.0)
        assert names(serving) == ["alpha"]
        await serving.pin("endpoint/a", "alpha", 0)  # 0 releases too
        await eventually(lambda: names(serving) == [])


async def test_a_pinned_copy_is_not_evicted_to_make_room_for_another_model(
    serving_config: Config, serving_registry: Registry
) -> None:
    estimate = serving_registry.get_model("alpha").memory_estimate_bytes
    config = serving_config(**{**IDLE, "serving.memory_limit_bytes": int(estimate * 1.5)})
    async with running(config, serving_registry) as serving:
        await serving.pin("endpoint/a", "alpha", 1)
        await serving.warm("alpha")
        with pytest.raises(ServiceUnavailableError, match="needs about"):
            await serving.post("beta", "/v1/completions", PROMPT, cold_start=HOLD)
        assert names(serving) == ["alpha"]
        serving.unpin("endpoint/a")
        await serving.post("beta", "/v1/completions", PROMPT, cold_start=HOLD)  # now alpha may go
        assert "beta" in names(serving)
