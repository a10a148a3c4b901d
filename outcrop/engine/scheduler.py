"""Which sequences run in the next engine step: pure decisions, no torch, no I/O.

The engine asks ``schedule(...)`` once per iteration and carries out the ``StepPlan``:

* **Admission.** Waiting sequences take free KV-cache slots first come, first served. The
  number of slots comes from the KV-cache byte budget (``kv_cache.plan_kv_cache``), so a
  sequence that cannot get memory waits in the queue instead of running the process out
  of memory.
* **Chunked prefill.** Prompts are computed in chunks of at most ``max_prefill_tokens``
  (padded) tokens per step; several short prompts share one prefill step.
* **No long stalls.** While some sequences are decoding, prefill steps and decode steps
  alternate, so a burst of new prompts delays running sequences by at most one chunk.
* **Iteration level.** A sequence leaves as soon as it finishes (the engine frees its slot)
  and a new one can join at the very next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class SeqView:
    """What the scheduler knows about one sequence."""

    seq_id: int
    prompt_len: int
    num_computed: int = 0  # prompt tokens already in the KV cache
    slot: int | None = None

    @property
    def prefill_remaining(self) -> int:
        return self.prompt_len - self.num_computed


@dataclass(frozen=True)
class SchedulerLimits:
    max_prefill_tokens: int = 512  # padded tokens per prefill step (rows x longest chunk)


@dataclass(frozen=True)
class PrefillChunk:
    seq_id: int
    slot: int
    start: int  # first prompt position of the chunk
    length: int  # tokens in the chunk


class StepKind(Enum):
    IDLE = "idle"  # nothing to run
    PREFILL = "prefill"  # compute prompt chunks (the last chunk of a prompt samples its first token)
    DECODE = "decode"  # one new token for every decoding sequence


@dataclass
class StepPlan:
    kind: StepKind
    admitted: list[tuple[int, int]] = field(default_factory=list)  # (seq_id, slot) moved off the queue
    prefill: list[PrefillChunk] = field(default_factory=list)
    decode: list[int] = field(default_factory=list)  # seq_ids


def schedule(
    waiting: list[SeqView],
    running: list[SeqView],
    free_slots: list[int],
    limits: SchedulerLimits,
    last_kind: StepKind = StepKind.IDLE,
) -> StepPlan:
    """Plan one step. ``waiting`` is in arrival order; ``running`` sequences hold slots."""
    free = sorted(free_slots)
    admitted: list[tuple[int, int]] = []
    active = list(running)
    for seq in waiting:
        if not free:
            break
        slot = free.pop(0)
        admitted.append((seq.seq_id, slot))
        active.append(SeqView(seq.seq_id, seq.prompt_len, seq.num_computed, slot))

    pending = [s for s in active if s.prefill_remaining > 0]
    decoding = [s for s in active if s.prefill_remaining <= 0]
    if pending and (not decoding or last_kind is not StepKind.PREFILL):
        return StepPlan(StepKind.PREFILL, admitted, prefill=_prefill_chunks(pending, limits))
    if decoding:
        return StepPlan(StepKind.DECODE, admitted, decode=[s.seq_id for s in decoding])
    return StepPlan(StepKind.IDLE, admitted)


def _prefill_chunks(pending: list[SeqView], limits: SchedulerLimits) -> list[PrefillChunk]:
    """Rows x chunk length stays within the budget; rows are taken in arrival order."""
    budget = max(1, limits.max_prefill_tokens)
    chunk_len = min(max(s.prefill_remaining for s in pending), budget)
    max_rows = max(1, budget // chunk_len)
    chunks = []
    for seq in pending[:max_rows]:
        assert seq.slot is not None, "a running sequence always holds a slot"
        chunks.append(
            PrefillChunk(seq.seq_id, seq.slot, seq.num_computed, min(seq.prefill_remaining, chunk_len))
        )
    return chunks
