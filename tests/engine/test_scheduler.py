"""The scheduler's decisions, as tables of cases."""

from __future__ import annotations

import pytest

from outcrop.engine.scheduler import PrefillChunk, SchedulerLimits, SeqView, StepKind, schedule


def seq(
    seq_id: int, prompt_len: int, computed: int = 0, slot: int | None = None, priority: int = 0
) -> SeqView:
    return SeqView(seq_id, prompt_len, computed, slot, priority)


ONLINE, BATCH = 0, 10


def batch(seq_id: int, prompt_len: int, computed: int = 0, slot: int | None = None) -> SeqView:
    return seq(seq_id, prompt_len, computed, slot, BATCH)


LIMITS = SchedulerLimits(max_prefill_tokens=16)
PLENTY = 1000  # free KV-cache blocks: memory is not what these cases decide


@pytest.mark.parametrize(
    ("case", "waiting", "running", "free", "last", "kind", "admitted", "prefill", "decode"),
    [
        ("nothing to do is idle", [], [], [0, 1], StepKind.IDLE, StepKind.IDLE, [], [], []),
        (
            "a new request takes the lowest free slot and prefills",
            [seq(1, 5)],
            [],
            [3, 1],
            StepKind.IDLE,
            StepKind.PREFILL,
            [(1, 1)],
            [PrefillChunk(1, 1, 0, 5)],
            [],
        ),
        (
            "requests wait when no slot is free (admission control)",
            [seq(2, 5)],
            [seq(1, 5, 5, 0)],
            [],
            StepKind.DECODE,
            StepKind.DECODE,
            [],
            [],
            [1],
        ),
        (
            "admission is first come first served",
            [seq(2, 5), seq(3, 5)],
            [],
            [0],
            StepKind.IDLE,
            StepKind.PREFILL,
            [(2, 0)],
            [PrefillChunk(2, 0, 0, 5)],
            [],
        ),
        (
            "a long prompt is prefilled in chunks of the budget",
            [seq(1, 40)],
            [],
            [0],
            StepKind.IDLE,
            StepKind.PREFILL,
            [(1, 0)],
            [PrefillChunk(1, 0, 0, 16)],
            [],
        ),
        (
            "a chunked prompt continues where it stopped",
            [],
            [seq(1, 40, 32, 0)],
            [1],
            StepKind.PREFILL,
            StepKind.PREFILL,
            [],
            [PrefillChunk(1, 0, 32, 8)],
            [],
        ),
        (
            "short prompts share one prefill step within the padded budget",
            [seq(1, 4), seq(2, 3), seq(3, 4), seq(4, 2), seq(5, 4)],
            [],
            [0, 1, 2, 3, 4],
            StepKind.IDLE,
            StepKind.PREFILL,
            [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)],
            [
                PrefillChunk(1, 0, 0, 4),
                PrefillChunk(2, 1, 0, 3),
                PrefillChunk(3, 2, 0, 4),
                PrefillChunk(4, 3, 0, 2),
            ],
            [],
        ),
        (
            "a new prompt is prefilled before the next decode",
            [seq(2, 5)],
            [seq(1, 5, 5, 0)],
            [1],
            StepKind.DECODE,
            StepKind.PREFILL,
            [(2, 1)],
            [PrefillChunk(2, 1, 0, 5)],
            [],
        ),
        (
            "after a prefill step running decodes go first (no long stalls)",
            [],
            [seq(1, 5, 5, 0), seq(2, 40, 16, 1)],
            [],
            StepKind.PREFILL,
            StepKind.DECODE,
            [],
            [],
            [1],
        ),
        (
            "decode takes every decoding sequence",
            [],
            [seq(1, 5, 5, 2), seq(2, 3, 3, 0)],
            [1],
            StepKind.DECODE,
            StepKind.DECODE,
            [],
            [],
            [1, 2],
        ),
    ],
)
def test_schedule_decides(
    case: str,
    waiting: list[SeqView],
    running: list[SeqView],
    free: list[int],
    last: StepKind,
    kind: StepKind,
    admitted: list[tuple[int, int]],
    prefill: list[PrefillChunk],
    decode: list[int],
) -> None:
    plan = schedule(waiting, running, free, PLENTY, LIMITS, last)
    assert (plan.kind, plan.admitted, plan.prefill, plan.decode) == (kind, admitted, prefill, decode), case


def test_schedule_does_not_mutate_its_inputs() -> None:
    free = [0, 1]
    waiting = [seq(1, 5)]
    schedule(waiting, [], free, PLENTY, LIMITS)
    assert free == [0, 1]
    assert waiting == [seq(1, 5)]


PRIORITY_LIMITS = SchedulerLimits(max_prefill_tokens=16, max_lower_priority_seqs=1)


@pytest.mark.parametrize(
    ("case", "waiting", "running", "free", "last", "kind", "admitted", "prefill", "decode", "paused"),
    [
        (
            "admission takes the lowest priority value first, arrival order within it",
            [batch(1, 5), seq(2, 5), batch(3, 5), seq(4, 5)],
            [],
            [0, 1],
            StepKind.IDLE,
            StepKind.PREFILL,
            [(2, 0), (4, 1)],
            [PrefillChunk(2, 0, 0, 5), PrefillChunk(4, 1, 0, 5)],
            [],
            [],
        ),
        (
            "a lone class runs in full, whatever its priority",
            [],
            [batch(1, 5, 5, 0), batch(2, 5, 5, 1), batch(3, 5, 5, 2)],
            [],
            StepKind.DECODE,
            StepKind.DECODE,
            [],
            [],
            [1, 2, 3],
            [],
        ),
        (
            "while online decodes, batch keeps only its oldest rows and the rest pause",
            [],
            [batch(3, 5, 5, 0), seq(9, 5, 5, 1), batch(1, 5, 5, 2), batch(2, 5, 5, 3)],
            [],
            StepKind.DECODE,
            StepKind.DECODE,
            [],
            [],
            [9, 1],
            [2, 3],
        ),
        (
            "an online prompt is prefilled first; paused batch prompts are not",
            [seq(9, 4)],
            [batch(1, 5, 5, 0), batch(2, 6, 0, 1)],
            [2],
            StepKind.DECODE,
            StepKind.PREFILL,
            [(9, 2)],
            [PrefillChunk(9, 2, 0, 4)],
            [],
            [2],
        ),
        (
            "online prefill and batch decode still alternate (no long stalls for either)",
            [],
            [seq(9, 40, 16, 2), batch(1, 5, 5, 0)],
            [],
            StepKind.PREFILL,
            StepKind.DECODE,
            [],
            [],
            [1],
            [],
        ),
        (
            "a batch prompt within the allowance is prefilled beside online ones",
            [],
            [seq(9, 4, 0, 2), batch(1, 3, 0, 0), batch(2, 3, 0, 1)],
            [],
            StepKind.DECODE,
            StepKind.PREFILL,
            [],
            [PrefillChunk(9, 2, 0, 4), PrefillChunk(1, 0, 0, 3)],
            [],
            [2],
        ),
        (
            "paused sequences resume when the online ones leave",
            [],
            [batch(1, 5, 5, 0), batch(2, 5, 5, 1)],
            [2],
            StepKind.DECODE,
            StepKind.DECODE,
            [],
            [],
            [1, 2],
            [],
        ),
        (
            "more urgent classes stack: the allowance goes to the next class first",
            [],
            [batch(1, 5, 5, 0), seq(2, 5, 5, 1, priority=5), seq(3, 5, 5, 2, priority=-1)],
            [],
            StepKind.DECODE,
            StepKind.DECODE,
            [],
            [],
            [3, 2],
            [1],
        ),
    ],
)
def test_schedule_by_priority_decides(
    case: str,
    waiting: list[SeqView],
    running: list[SeqView],
    free: list[int],
    last: StepKind,
    kind: StepKind,
    admitted: list[tuple[int, int]],
    prefill: list[PrefillChunk],
    decode: list[int],
    paused: list[int],
) -> None:
    plan = schedule(waiting, running, free, PLENTY, PRIORITY_LIMITS, last)
    got = (plan.kind, plan.admitted, plan.prefill, plan.decode, plan.paused)
    assert got == (kind, admitted, prefill, decode, paused), case


def test_no_lower_priority_allowance_pauses_every_batch_sequence_beside_online_ones() -> None:
    limits = SchedulerLimits(max_prefill_tokens=16, max_lower_priority_seqs=0)
    plan = schedule([], [seq(9, 5, 5, 1), batch(1, 5, 5, 0)], [], PLENTY, limits, StepKind.DECODE)
    assert (plan.decode, plan.paused) == ([9], [1])


@pytest.mark.parametrize(
    ("case", "waiting", "running", "admitted", "preempted"),
    [
        (
            "an online request takes the slot of the newest batch sequence that computed nothing",
            [seq(9, 4)],
            [batch(1, 5, 5, 0), batch(2, 5, 0, 1), batch(3, 5, 0, 2)],
            [(9, 2)],
            [3],
        ),
        (
            "a batch sequence with tokens in the KV cache keeps its slot (nothing is recomputed)",
            [seq(9, 4)],
            [batch(1, 5, 5, 0), batch(2, 5, 2, 1)],
            [],
            [],
        ),
        (
            "sequences of the same priority never preempt each other",
            [batch(9, 4)],
            [batch(1, 5, 0, 0)],
            [],
            [],
        ),
        (
            "each preemption admits one more urgent sequence, most urgent first",
            [seq(8, 4), seq(9, 4)],
            [batch(1, 5, 0, 0), batch(2, 5, 0, 1), batch(3, 5, 3, 2)],
            [(8, 1), (9, 0)],
            [2, 1],
        ),
    ],
)
def test_urgent_sequences_preempt_only_unstarted_less_urgent_ones(
    case: str,
    waiting: list[SeqView],
    running: list[SeqView],
    admitted: list[tuple[int, int]],
    preempted: list[int],
) -> None:
    plan = schedule(waiting, running, [], PLENTY, PRIORITY_LIMITS, StepKind.DECODE)
    assert (plan.admitted, plan.preempted) == (admitted, preempted), case


def paged(
    seq_id: int,
    prompt_len: int,
    computed: int = 0,
    slot: int | None = None,
    priority: int = 0,
    admit: int = 0,
    grow: int = 0,
    held: int = 0,
) -> SeqView:
    return SeqView(seq_id, prompt_len, computed, slot, priority, admit, grow, held)


@pytest.mark.parametrize(
    ("case", "waiting", "running", "free_blocks", "kind", "admitted", "preempted", "decode"),
    [
        (
            "a sequence is admitted when the pool covers the blocks it takes",
            [paged(1, 40, admit=3)],
            [],
            3,
            StepKind.PREFILL,
            [(1, 0)],
            [],
            [],
        ),
        (
            "a sequence waits while the pool cannot cover it, though slots are free",
            [paged(1, 40, admit=3)],
            [],
            2,
            StepKind.IDLE,
            [],
            [],
            [],
        ),
        (
            "prefix-cache hits make admission cheaper (only the blocks it takes count)",
            [paged(1, 40, admit=1)],
            [],
            1,
            StepKind.PREFILL,
            [(1, 0)],
            [],
            [],
        ),
        (
            "admission keeps back the blocks decoding sequences need next",
            [paged(2, 20, admit=2)],
            [paged(1, 16, 16, 1, grow=1, held=1)],
            2,
            StepKind.DECODE,
            [],
            [],
            [1],
        ),
        (
            "first come first served: a small request does not overtake one that waits for blocks",
            [paged(1, 40, admit=3), paged(2, 4, admit=1)],
            [],
            2,
            StepKind.IDLE,
            [],
            [],
            [],
        ),
        (
            "an online request takes the blocks of a batch sequence that has not started",
            [paged(9, 20, admit=2)],
            [paged(1, 20, 0, 1, BATCH, held=2)],
            0,
            StepKind.PREFILL,
            [(9, 0)],
            [1],
            [],
        ),
        (
            "when decoding runs out of blocks the least urgent, newest sequence is preempted",
            [],
            [paged(1, 16, 16, 0, grow=1, held=1), paged(2, 16, 16, 1, grow=1, held=1)],
            1,
            StepKind.DECODE,
            [],
            [2],
            [1],
        ),
        (
            "a batch sequence is preempted before any online one, paused or not",
            [],
            [
                paged(1, 16, 16, 0, BATCH, grow=1, held=1),
                paged(2, 16, 16, 1, grow=1, held=1),
                paged(3, 16, 16, 2, grow=1, held=1),
            ],
            1,
            StepKind.DECODE,
            [],
            [1],
            [2, 3],
        ),
        (
            "preemption stops as soon as the rest fit",
            [],
            [
                paged(1, 16, 16, 0, grow=1, held=1),
                paged(2, 8, 8, 1, held=1),
                paged(3, 16, 16, 2, grow=1, held=2),
            ],
            0,
            StepKind.DECODE,
            [],
            [3],
            [1, 2],
        ),
    ],
)
def test_schedule_by_blocks_decides(
    case: str,
    waiting: list[SeqView],
    running: list[SeqView],
    free_blocks: int,
    kind: StepKind,
    admitted: list[tuple[int, int]],
    preempted: list[int],
    decode: list[int],
) -> None:
    used = {s.slot for s in running}
    free_slots = [i for i in range(4) if i not in used]
    plan = schedule(waiting, running, free_slots, free_blocks, PRIORITY_LIMITS, StepKind.PREFILL)
    assert (plan.kind, plan.admitted, plan.preempted, plan.decode) == (kind, admitted, preempted, decode), (
        case
    )
