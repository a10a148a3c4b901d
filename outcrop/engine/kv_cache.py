"""The preallocated KV cache and how big it may be.

Layout (gpt-fast style, one tensor per layer for keys and one for values)::

    keys[layer]: [slots, kv_heads, max_model_len + 1, head_dim]

A *slot* holds one sequence from its first prompt token to its last generated token, so a
sequence admitted to a slot can never run out of cache mid-generation. The extra last
position is a scratch row: padded positions of a batched prefill write there, so they
never overwrite real entries. The number of slots is what the byte budget pays for
(``plan_kv_cache``); the scheduler admits sequences only into free slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from outcrop.engine.meminfo import available_memory_bytes as host_available_memory_bytes
from outcrop.errors import ConfigError

# Why 0.5: the KV cache is the one big allocation made after the weights; half of what is
# free leaves room for activations, the tokenizer, the HTTP server and other processes.
DEFAULT_FREE_MEMORY_FRACTION = 0.5
# Why 0.85 on CUDA: the GPU runs nothing else, but prefill activations still need headroom.
DEFAULT_CUDA_FREE_MEMORY_FRACTION = 0.85


def element_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """Bytes one token of one sequence takes in the cache (keys + values, all layers)."""
    return 2 * num_layers * num_kv_heads * head_dim * element_bytes(dtype)


@dataclass(frozen=True)
class KVPlan:
    num_slots: int  # sequences that can be resident at once (the batch limit)
    max_model_len: int  # tokens per sequence (prompt + generated)
    bytes_total: int  # what the cache tensors take


def plan_kv_cache(budget_bytes: int, bytes_per_token: int, max_model_len: int, max_batch: int) -> KVPlan:
    """As many full-length slots as the budget pays for, at most ``max_batch``.

    If even one full-length slot does not fit, the context is shortened to what one slot
    can hold (the worker reports the shorter limit to clients). Raises ``ConfigError``
    if the budget cannot hold a single 16-token sequence.
    """
    per_slot = bytes_per_token * (max_model_len + 1)
    slots = min(max_batch, budget_bytes // per_slot)
    if slots >= 1:
        return KVPlan(int(slots), max_model_len, int(slots * per_slot))
    shortened = budget_bytes // bytes_per_token - 1
    if shortened < 16:
        raise ConfigError(
            f"The KV-cache budget of {budget_bytes} bytes cannot hold one sequence ({bytes_per_token} bytes per "
            "token); raise --kv-cache-bytes or free memory."
        )
    return KVPlan(1, int(shortened), int((shortened + 1) * bytes_per_token))


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on the device: ``MemAvailable`` on CPU, ``cudaMemGetInfo`` on CUDA."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    host_bytes = host_available_memory_bytes()
    return 4 * 1024**3 if host_bytes is None else host_bytes  # unknown platform: assume a modest 4 GiB


def default_kv_budget_bytes(device: torch.device) -> int:
    fraction = DEFAULT_CUDA_FREE_MEMORY_FRACTION if device.type == "cuda" else DEFAULT_FREE_MEMORY_FRACTION
    return int(available_memory_bytes(device) * fraction)


class KVCache:
    """The cache tensors; see the module docstring for the layout."""

    def __init__(
        self,
        plan: KVPlan,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.plan = plan
        self.num_slots = plan.num_slots
        self.max_model_len = plan.max_model_len
        self.scratch_position = plan.max_model_len  # padded prefill positions write here
        shape = (plan.num_slots, num_kv_heads, plan.max_model_len + 1, head_dim)
        # keys[layer]: [slots, kv_heads, max_model_len + 1, head_dim]
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.bytes_total = plan.bytes_total
