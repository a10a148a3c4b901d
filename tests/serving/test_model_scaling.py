"""Min/max copies set through the API (Serving.set_scaling): checked, stored, followed by the controller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.errors import InvalidRequestError
from outcrop.registry.service import Registry
from outcrop.serving.copies import CopyStatus
from outcrop.serving.service import Serving
from outcrop.store.model_scaling import ModelScalingStore
from tests.serving.conftest import running

Config = Callable[..., OutcropConfig]


async def eventually(check: Callable[[], bool], timeout_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def clean_scaling(serving_registry: Registry) -> Iterator[ModelScalingStore]:
    """The shared registry's scaling rows, removed after the test (other tests share the registry)."""
    store = ModelScalingStore(serving_registry.db)
    yield store
    for model_id in store.all():
        store.delete(model_id)


def test_stored_scaling_wins_over_the_configuration_and_is_read_at_start(
    serving_config: Config, serving_registry: Registry, clean_scaling: ModelScalingStore
) -> None:
    gamma = serving_registry.get_model("gamma")
    config = serving_config(**{"serving.model_overrides": {"gamma": {"min_copies": 2, "max_copies": 4}}})
    serving = Serving(config, serving_registry)
    stored = serving.set_scaling(gamma, 0, 3, "ops")
    assert (stored.min_copies, stored.max_copies, stored.updated_by) == (0, 3, "ops")
    # Not applied until apply_scaling (on the event loop) ...
    assert (serving.spec_for(gamma).min_copies, serving.spec_for(gamma).max_copies) == (2, 4)
    serving.apply_scaling(gamma, stored)
    spec = serving.spec_for(gamma)
    assert (spec.min_copies, spec.max_copies, spec.max_concurrency_per_copy) == (0, 3, 16)
    # ... while a gateway started later (a restart) reads it at once.
    again = Serving(config, serving_registry)
    assert (again.spec_for(gamma).min_copies, again.spec_for(gamma).max_copies) == (0, 3)
    assert again.scaling(gamma)["source"] == "api"


@pytest.mark.parametrize(
    ("low", "high", "param", "words"),
    [
        (-1, 2, "minCopies", "0 or more"),
        (0, 0, "maxCopies", "at least 1"),
        (3, 2, "minCopies", "raise maxCopies to at least 3"),
        (0, 9, "maxCopies", "above this server's cap of 8"),
    ],
)
def test_bad_min_max_raise_naming_the_fix(
    serving_config: Config, serving_registry: Registry, low: int, high: int, param: str, words: str
) -> None:
    serving = Serving(serving_config(**{"serving.scaling_max_copies": 8}), serving_registry)
    with pytest.raises(InvalidRequestError) as raised:
        serving.set_scaling(serving_registry.get_model("gamma"), low, high)
    assert raised.value.param == param and words in raised.value.message


@pytest.mark.anyio
async def test_min_copies_start_a_copy_and_the_detail_counts_down_to_scale_to_zero(
    serving_config: Config, serving_registry: Registry, clean_scaling: ModelScalingStore
) -> None:
    gamma = serving_registry.get_model("gamma")
    config = serving_config(**{"serving.defaults.idle_seconds_before_scale_down": 60})
    async with running(config, serving_registry) as serving:
        assert serving.scaling(gamma) == {
            "minCopies": 0,
            "maxCopies": 1,
            "source": "config",
            "maxCopiesCap": 64,
            "liveCopies": 0,
            "scaleToZeroSeconds": 60.0,
            "idleSeconds": None,
            "scaleToZeroInSeconds": None,
        }
        serving.apply_scaling(gamma, await asyncio.to_thread(serving.set_scaling, gamma, 1, 2))

        def ready() -> list[Any]:
            return [c for c in serving.copies() if c.model_name == "gamma" and c.state is CopyStatus.READY]

        await eventually(lambda: len(ready()) == 1)
        kept = serving.scaling(gamma)
        assert kept["scaleToZeroSeconds"] is None and kept["scaleToZeroInSeconds"] is None
        assert kept["liveCopies"] == 1 and kept["idleSeconds"] is not None

        serving.apply_scaling(gamma, await asyncio.to_thread(serving.set_scaling, gamma, 0, 1))
        idle = serving.scaling(gamma)
        assert idle["scaleToZeroSeconds"] == 60.0
        assert 0 < idle["scaleToZeroInSeconds"] <= 60.0
        assert idle["idleSeconds"] + idle["scaleToZeroInSeconds"] == pytest.approx(60.0, abs=0.01)
        await asyncio.sleep(0.5)
        assert len(ready()) == 1  # the idle window keeps it, as for any copy
