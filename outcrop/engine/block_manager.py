"""The paged KV cache's bookkeeping: which blocks each sequence holds, and the prefix cache.

Pure Python, no torch: the cache tensors live in ``kv_cache``; this module only hands out
block ids.

* **Blocks.** The cache is one pool of ``num_blocks`` blocks of ``block_size`` tokens. A
  sequence holds a *block table* (block ids, in position order) that grows as the
  sequence does; token ``p`` of the sequence lives in block ``table[p // block_size]`` at
  offset ``p % block_size``.
* **Prefix caching.** A *full* block whose tokens have been computed is keyed by a hash
  chain: ``hash(parent's key, the block's token ids)``, so a key names the whole prefix up
  to that block, not just its 16 tokens. A later sequence whose prompt starts with the
  same full blocks takes those blocks (their reference count goes up) and skips computing
  them. Blocks are shared read-only: a sequence only ever writes past its last full
  cached block, into blocks it holds alone.
* **Free pool, LRU.** A block whose reference count drops to zero goes back to the free
  pool but keeps its key, so a later request can still hit it. New blocks are taken from
  the pool's oldest end; blocks with no key are put there, cached blocks at the newest
  end, so cached content is evicted last, least recently freed first. Taking a cached
  block for new content drops its key.

The hash is SHA-256 over the parent's digest and the token ids (8 bytes each), so two
different prefixes never share a key in practice (Python's ``hash`` of a tuple could).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

# Why 16: vLLM's default; small enough that little is wasted per sequence (< 16 tokens),
# large enough that the block table and the hash chain stay short.
DEFAULT_BLOCK_SIZE = 16


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``num_tokens`` tokens."""
    return -(-num_tokens // block_size)


def block_hashes(token_ids: list[int], block_size: int, start: list[bytes] | None = None) -> list[bytes]:
    """The hash chain of every full block of ``token_ids``; ``start`` is a chain already computed
    for a prefix of them (it is extended, not recomputed)."""
    hashes = list(start or [])
    parent = hashes[-1] if hashes else b""
    for first in range(len(hashes) * block_size, len(token_ids) - block_size + 1, block_size):
        chunk = array("q", token_ids[first : first + block_size]).tobytes()
        parent = hashlib.sha256(parent + chunk).digest()
        hashes.append(parent)
    return hashes


@dataclass
class _Block:
    block_id: int
    ref_count: int = 0
    key: bytes | None = None  # set once the block is full and computed


class BlockManager:
    """Block tables per sequence, the free pool and the prefix cache; see the module docstring."""

    def __init__(self, num_blocks: int, block_size: int = DEFAULT_BLOCK_SIZE, prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of one token, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self._blocks = [_Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[bytes, int] = {}  # key -> block id (in use or in the free pool)
        self.tables: dict[int, list[int]] = {}  # seq_id -> block ids
        self._keyed: dict[int, int] = {}  # seq_id -> how many of its blocks carry a key

    # ------------------------------------------------------------------ queries

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def cached_prefix(self, hashes: list[bytes], num_tokens: int) -> list[int]:
        """Block ids of the longest cached prefix of a sequence of ``num_tokens`` tokens.

        At least one token is always left to compute (the step that computes it yields
        the logits for the next token), so a fully cached sequence gives up its last hit.
        """
        if not self.prefix_caching:
            return []
        hits: list[int] = []
        for key in hashes:
            block_id = self._cached.get(key)
            if block_id is None:
                break
            hits.append(block_id)
        while hits and len(hits) * self.block_size >= num_tokens:
            hits.pop()
        return hits

    def blocks_to_admit(self, hashes: list[bytes], num_tokens: int) -> int:
        """Free-pool blocks that admitting this sequence (all of its ``num_tokens``) would take."""
        return self.admission(hashes, num_tokens)[0]

    def admission(self, hashes: list[bytes], num_tokens: int) -> tuple[int, int]:
        """(free-pool blocks admitting this sequence would take, leading tokens it would find computed)."""
        hits = self.cached_prefix(hashes, num_tokens)
        hits_in_pool = sum(1 for b in hits if self._blocks[b].ref_count == 0)
        return blocks_for(num_tokens, self.block_size) - len(hits) + hits_in_pool, len(hits) * self.block_size

    def blocks_to_grow(self, seq_id: int, num_tokens: int) -> int:
        """New blocks the sequence needs to hold ``num_tokens`` tokens."""
        return max(0, blocks_for(num_tokens, self.block_size) - len(self.tables.get(seq_id, ())))

    # ------------------------------------------------------------------ changes

    def allocate(self, seq_id: int, hashes: list[bytes], num_tokens: int) -> int | None:
        """Give a new sequence blocks for ``num_tokens`` tokens, reusing its cached prefix.

        Returns how many leading tokens are already computed (prefix-cache hits), or None
        (and changes nothing) if the free pool cannot cover the rest.
        """
        assert seq_id not in self.tables, f"sequence {seq_id} already holds blocks"
        if self.blocks_to_admit(hashes, num_tokens) > self.num_free:
            return None
        hits = self.cached_prefix(hashes, num_tokens)
        for block_id in hits:
            self._ref(block_id)
        self.tables[seq_id] = list(hits)
        self._keyed[seq_id] = len(hits)
        grown = self.grow(seq_id, num_tokens)
        assert grown, "blocks_to_admit counted the free pool"
        return len(hits) * self.block_size

    def grow(self, seq_id: int, num_tokens: int) -> bool:
        """Extend the sequence's table to hold ``num_tokens`` tokens; False (no change) if the pool is short."""
        need = self.blocks_to_grow(seq_id, num_tokens)
        if need > self.num_free:
            return False
        table = self.tables[seq_id]
        for _ in range(need):
            block_id, _ = self._free.popitem(last=False)
            block = self._blocks[block_id]
            if block.key is not None:  # evict: its old content is overwritten
                del self._cached[block.key]
                block.key = None
            block.ref_count = 1
            table.append(block_id)
        return True

    def cache_computed(self, seq_id: int, hashes: list[bytes], num_computed: int) -> None:
        """Key the sequence's full blocks among its first ``num_computed`` tokens (they are computed)."""
        if not self.prefix_caching:
            return
        table = self.tables[seq_id]
        full = min(num_computed // self.block_size, len(hashes), len(table))
        for index in range(self._keyed[seq_id], full):
            key = hashes[index]
            block = self._blocks[table[index]]
            if key in self._cached or block.key is not None:
                continue  # the same content is cached in another block already; keep that one
            block.key = key
            self._cached[key] = block.block_id
        self._keyed[seq_id] = max(self._keyed[seq_id], full)

    def free(self, seq_id: int) -> None:
        """Give back every block of the sequence (shared blocks stay with their other holders)."""
        table = self.tables.pop(seq_id, None)
        self._keyed.pop(seq_id, None)
        if table is None:
            return
        for block_id in reversed(table):  # the prefix's head is evicted last
            block = self._blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
                if block.key is None:
                    self._free.move_to_end(block_id, last=False)

    def _ref(self, block_id: int) -> None:
        block = self._blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
        block.ref_count += 1
