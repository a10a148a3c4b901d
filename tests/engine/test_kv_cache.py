from __future__ import annotations

import pytest
import torch

from outcrop.engine.kv_cache import KVPlan, kv_bytes_per_token, max_concurrent_sequences, plan_kv_cache
from outcrop.errors import ConfigError


def test_bytes_per_token_counts_keys_and_values_of_every_layer() -> None:
    assert kv_bytes_per_token(8, 8, 64, torch.float32) == 2 * 8 * 8 * 64 * 4
    assert kv_bytes_per_token(8, 8, 64, torch.bfloat16) == 2 * 8 * 8 * 64 * 2


@pytest.mark.parametrize(
    ("budget", "per_token", "max_len", "expected"),
    [
        (11 * 16 * 100, 100, 64, KVPlan(10, 16, 64, 11 * 16 * 100)),  # one block of the budget is scratch
        (11 * 16 * 100 + 99, 100, 64, KVPlan(10, 16, 64, 11 * 16 * 100)),  # whole blocks only
        (3 * 16 * 100, 100, 64, KVPlan(2, 16, 32, 3 * 16 * 100)),  # not one full-length sequence: shorten
    ],
)
def test_plan_fits_the_budget(budget: int, per_token: int, max_len: int, expected: KVPlan) -> None:
    plan = plan_kv_cache(budget, per_token, max_len, 16)
    assert plan == expected
    assert plan.bytes_total <= budget


def test_the_pool_holds_at_most_max_batch_full_length_sequences() -> None:
    plan = plan_kv_cache(2**30, 100, 64, 16, max_batch=4)
    assert plan.num_blocks == 4 * 4 and plan.bytes_total == 17 * 16 * 100


def test_max_model_len_costs_no_memory_per_sequence() -> None:
    short = plan_kv_cache(2**30, 1000, 512)
    long = plan_kv_cache(2**30, 1000, 8192)
    assert short.num_blocks == long.num_blocks
    assert max_concurrent_sequences(long, 512) == long.num_blocks // 32


def test_a_budget_too_small_for_one_block_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--kv-cache-bytes"):
        plan_kv_cache(1000, 100, 100, 16)
