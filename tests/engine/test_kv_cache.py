from __future__ import annotations

import pytest
import torch

from outcrop.engine.kv_cache import KVPlan, kv_bytes_per_token, plan_kv_cache
from outcrop.errors import ConfigError


def test_bytes_per_token_counts_keys_and_values_of_every_layer() -> None:
    assert kv_bytes_per_token(8, 8, 64, torch.float32) == 2 * 8 * 8 * 64 * 4
    assert kv_bytes_per_token(8, 8, 64, torch.bfloat16) == 2 * 8 * 8 * 64 * 2


@pytest.mark.parametrize(
    ("budget", "per_token", "max_len", "max_batch", "expected"),
    [
        (10 * 101 * 100, 100, 100, 4, KVPlan(4, 100, 4 * 101 * 100)),  # budget > batch: batch limits
        (3 * 101 * 100, 100, 100, 8, KVPlan(3, 100, 3 * 101 * 100)),  # budget limits the slots
        (50 * 100, 100, 100, 8, KVPlan(1, 49, 50 * 100)),  # not one full slot: shorten the context
    ],
)
def test_plan_fits_the_budget(
    budget: int, per_token: int, max_len: int, max_batch: int, expected: KVPlan
) -> None:
    plan = plan_kv_cache(budget, per_token, max_len, max_batch)
    assert plan == expected
    assert plan.bytes_total <= budget


def test_a_budget_too_small_for_any_sequence_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--kv-cache-bytes"):
        plan_kv_cache(1000, 100, 100, 8)
