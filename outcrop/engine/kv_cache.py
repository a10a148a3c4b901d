"""The paged KV cache: one pool of fixed-size blocks, and how big it may be.

Layout (one tensor per layer for keys and one for values)::

    keys[layer]: [num_blocks + 1, block_size, kv_heads, head_dim]

Token ``p`` of a sequence lives in block ``table[p // block_size]`` at offset
``p % block_size``, where ``table`` is the sequence's block table (``block_manager``).
Memory is spent per token actually held, not per possible token: ``max_model_len`` only
bounds one request, it reserves nothing. The extra last block is scratch: padded
positions of a batched prefill write there, and padded block-table entries point there,
so they never touch a real entry. The number of blocks is what the byte budget pays for,
capped at what ``--max-batch`` full-length sequences could ever hold (``plan_kv_cache``); the
scheduler admits sequences by free blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from outcrop.engine.block_manager import DEFAULT_BLOCK_SIZE, blocks_for
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
    num_blocks: int  # blocks in the pool (the scratch block not counted)
    block_size: int  # tokens per block
    max_model_len: int  # tokens per sequence (prompt + generated)
    bytes_total: int  # what the cache tensors take, scratch block included

    @property
    def num_tokens(self) -> int:
        """Tokens the pool holds, over all sequences."""
        return self.num_blocks * self.block_size


def plan_kv_cache(
    budget_bytes: int,
    bytes_per_token: int,
    max_model_len: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_batch: int | None = None,
) -> KVPlan:
    """As many blocks as the budget pays for (one scratch block is paid first), but never more
    than ``max_batch`` full-length sequences need: the batch cannot hold more tokens than that,
    so a bigger pool would only cost memory (on a CPU node, memory other copies need).

    If the pool cannot hold even one full-length sequence, the context is shortened to what
    the pool holds (the worker reports the shorter limit to clients). Raises ``ConfigError``
    if the budget cannot hold a single block.
    """
    per_block = bytes_per_token * block_size
    num_blocks = budget_bytes // per_block - 1
    if max_batch is not None:
        num_blocks = min(num_blocks, max_batch * blocks_for(max_model_len, block_size))
    if num_blocks < 1:
        raise ConfigError(
            f"The KV-cache budget of {budget_bytes} bytes cannot hold one block of {block_size} tokens "
            f"({per_block} bytes, plus one scratch block); raise --kv-cache-bytes or free memory."
        )
    max_len = min(max_model_len, num_blocks * block_size)
    return KVPlan(int(num_blocks), block_size, int(max_len), int((num_blocks + 1) * per_block))


def max_concurrent_sequences(plan: KVPlan, tokens_per_sequence: int) -> int:
    """How many sequences of ``tokens_per_sequence`` tokens fit in the pool at once."""
    return plan.num_blocks // blocks_for(tokens_per_sequence, plan.block_size)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on the device: ``MemAvailable`` on CPU, ``cudaMemGetInfo`` on CUDA."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    host_bytes = host_available_memory_bytes()
    return 4 * 1024**3 if host_bytes is None else host_bytes  # unknown platform: assume a modest 4 GiB


def default_kv_budget_bytes(device: torch.device) -> int:
    """A share of what is free now; called after the weights are loaded, so they are not counted."""
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
        self.num_blocks = plan.num_blocks
        self.block_size = plan.block_size
        self.max_model_len = plan.max_model_len
        self.scratch_block = plan.num_blocks  # padded writes and padded table entries go here
        shape = (plan.num_blocks + 1, plan.block_size, num_kv_heads, head_dim)
        # keys[layer]: [num_blocks + 1, block_size, kv_heads, head_dim]
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.bytes_total = plan.bytes_total
