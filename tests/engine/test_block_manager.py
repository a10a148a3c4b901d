"""The block manager's bookkeeping: block tables, the prefix cache and its LRU free pool."""

from __future__ import annotations

import pytest

from outcrop.engine.block_manager import BlockManager, block_hashes, blocks_for

BS = 4


def tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


@pytest.mark.parametrize(("num_tokens", "blocks"), [(0, 0), (1, 1), (4, 1), (5, 2), (16, 4)])
def test_blocks_for_rounds_up(num_tokens: int, blocks: int) -> None:
    assert blocks_for(num_tokens, BS) == blocks


def test_hash_chain_names_the_whole_prefix_not_just_the_block() -> None:
    a = block_hashes([1, 2, 3, 4, 5, 6, 7, 8], BS)
    b = block_hashes([9, 9, 9, 9, 5, 6, 7, 8], BS)
    assert len(a) == 2 and a[1] != b[1]  # same second block, different prefix
    assert block_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], BS) == a  # the partial block has no key
    assert block_hashes([1, 2, 3, 4, 5, 6, 7, 8], BS, a[:1]) == a  # extending a chain gives the same keys


def test_a_sequence_gets_blocks_as_it_grows_and_gives_them_all_back() -> None:
    bm = BlockManager(8, BS)
    assert bm.allocate(1, [], 6) == 0
    assert len(bm.tables[1]) == 2 and bm.num_free == 6
    assert bm.blocks_to_grow(1, 8) == 0 and bm.blocks_to_grow(1, 9) == 1
    assert bm.grow(1, 9) and len(bm.tables[1]) == 3
    bm.free(1)
    assert bm.num_free == 8 and 1 not in bm.tables


def test_allocation_that_the_pool_cannot_cover_changes_nothing() -> None:
    bm = BlockManager(2, BS)
    assert bm.allocate(1, [], 9) is None
    assert bm.num_free == 2 and 1 not in bm.tables
    assert bm.allocate(1, [], 8) == 0
    assert not bm.grow(1, 9) and len(bm.tables[1]) == 2


def test_a_later_sequence_with_the_same_prefix_reuses_its_computed_full_blocks() -> None:
    bm = BlockManager(8, BS)
    first = tokens(10)
    h1 = block_hashes(first, BS)
    bm.allocate(1, h1, 10)
    bm.cache_computed(1, h1, 10)  # two full blocks keyed; the third is partial
    second = [*tokens(8), 99, 98, 97]
    h2 = block_hashes(second, BS)
    assert bm.blocks_to_admit(h2, 11) == 1  # 3 blocks, 2 of them shared and in use
    assert bm.allocate(2, h2, 11) == 8
    assert bm.tables[2][:2] == bm.tables[1][:2] and bm.tables[2][2] != bm.tables[1][2]
    assert bm.num_free == 8 - 4


def test_only_computed_blocks_are_reused() -> None:
    bm = BlockManager(8, BS)
    h = block_hashes(tokens(12), BS)
    bm.allocate(1, h, 12)
    bm.cache_computed(1, h, 5)  # a chunked prefill computed 5 tokens: one full block
    assert bm.allocate(2, h, 12) == 4


def test_a_fully_cached_prompt_still_computes_its_last_block() -> None:
    bm = BlockManager(8, BS)
    h = block_hashes(tokens(8), BS)
    bm.allocate(1, h, 8)
    bm.cache_computed(1, h, 8)
    assert bm.allocate(2, h, 8) == 4  # the last token's logits need a forward


def test_freed_cached_blocks_stay_reusable_until_the_pool_needs_them_least_recently_freed_first() -> None:
    bm = BlockManager(4, BS)
    ha, hb = block_hashes(tokens(8), BS), block_hashes(tokens(8, 100), BS)
    for seq_id, h in ((1, ha), (2, hb)):
        bm.allocate(seq_id, h, 8)
        bm.cache_computed(seq_id, h, 8)
    bm.free(1)
    bm.free(2)
    assert bm.num_free == 4
    assert len(bm.cached_prefix([*ha, b"x"], 9)) == 2
    bm.allocate(3, [], 8)  # two new blocks evict a's, the least recently freed
    assert bm.cached_prefix([*ha, b"x"], 9) == []
    assert len(bm.cached_prefix([*hb, b"x"], 9)) == 2


def test_uncached_blocks_are_taken_before_cached_ones() -> None:
    bm = BlockManager(4, BS)
    h = block_hashes(tokens(8), BS)
    bm.allocate(1, h, 8)
    bm.cache_computed(1, h, 8)
    bm.allocate(2, [], 8)
    bm.free(1)
    bm.free(2)
    bm.allocate(3, [], 8)  # two blocks: the unkeyed ones
    assert len(bm.cached_prefix([*h, b"z"], 9)) == 2


def test_prefix_caching_off_never_hits() -> None:
    bm = BlockManager(8, BS, prefix_caching=False)
    h = block_hashes(tokens(8), BS)
    bm.allocate(1, h, 8)
    bm.cache_computed(1, h, 8)
    assert bm.allocate(2, [*h, b"z"], 9) == 0


def test_shared_blocks_go_back_to_the_pool_only_when_their_last_holder_leaves() -> None:
    bm = BlockManager(8, BS)
    h = block_hashes(tokens(9), BS)
    bm.allocate(1, h, 9)
    bm.cache_computed(1, h, 9)
    bm.allocate(2, h, 9)
    bm.free(1)
    assert bm.num_free == 8 - 3  # two shared blocks + seq 2's own third
    bm.free(2)
    assert bm.num_free == 8
