"""Which sequences run in the next engine step: pure decisions, no torch, no I/O.

The engine asks ``schedule(...)`` once per iteration and carries out the ``StepPlan``:

* **Admission.** Waiting sequences are admitted by priority (lower value first, vLLM's
  convention: online 0, batch 10), first come, first served within a priority. Each needs
  a free *slot* (a row of the batch: ``--max-batch`` of them, cheap) and the free KV-cache
  *blocks* its tokens take beyond its prefix-cache hits (``SeqView.admit_blocks``), with
  the blocks running sequences need for this step kept back. The pool's size comes from
  the KV-cache byte budget (``kv_cache.plan_kv_cache``), so a sequence that cannot get
  memory waits in the queue instead of running the process out of memory.
* **Priority classes.** The most urgent class present runs in full; while it is present,
  at most ``max_lower_priority_seqs`` sequences of less urgent classes run beside it (the
  oldest first) and the rest **pause**: they keep their KV-cache slot and the tokens in it
  and are skipped by prefill and decode steps until the urgent class leaves room. On a CPU a
  step's time grows with its rows, so this keeps an online request's time per token close
  to what it is without a batch job. (vLLM's ``--scheduling-policy priority`` orders its
  queue the same way but evicts, and later recomputes, lower-priority sequences only when
  KV memory runs out; pausing costs nothing to resume.)
* **Preemption, free of cost.** When a more urgent sequence finds no free slot or too few
  free blocks, a less urgent one that has not computed anything yet (it was admitted, then
  paused before its prefill) goes back to the queue and gives up its slot and blocks.
* **Preemption by recompute.** When decoding sequences need new blocks and the pool is
  out, the least urgent sequence (the highest priority value, the newest within it; paused
  ones first, as they are the least urgent) gives up its slot and blocks and queues again;
  when readmitted it recomputes its prompt and the tokens it generated (mostly prefix-cache
  hits while its blocks have not been reused), then carries on where it stopped.
* **Chunked prefill.** Prompts are computed in chunks of at most ``max_prefill_tokens``
  (padded) tokens per step; several short prompts share one prefill step.
* **No long stalls.** While some sequences are decoding, prefill steps and decode steps
  alternate, so a burst of new prompts delays running sequences by at most one chunk.
* **Iteration level.** A sequence leaves as soon as it finishes (the engine frees its slot)
  and a new one can join at the very next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

# Why 1: on a 2-core CPU a decode step costs ~25 ms plus ~2 ms per row, so one batch row beside an
# online sequence slows it by ~8% while the job still advances; in one run of the batch benchmark
# 1 row gave online p95 1.50x, 2 rows 1.62x (noisy, load ~5). Raise it on GPUs, where rows are cheap.
DEFAULT_MAX_LOWER_PRIORITY_SEQS = 1


@dataclass(frozen=True)
class SeqView:
    """What the scheduler knows about one sequence."""

    seq_id: int
    prompt_len: int  # tokens to prefill (a recomputed sequence: its prompt and its output so far)
    num_computed: int = 0  # of those, tokens already in the KV cache
    slot: int | None = None
    priority: int = 0  # lower runs sooner (vLLM's convention)
    admit_blocks: int = 0  # waiting: free blocks its admission takes (prefix-cache hits not counted)
    grow_blocks: int = 0  # running: new blocks its next decode token needs
    held_blocks: int = 0  # running: blocks it gives back if preempted

    @property
    def prefill_remaining(self) -> int:
        return self.prompt_len - self.num_computed


@dataclass(frozen=True)
class SchedulerLimits:
    max_prefill_tokens: int = 512  # padded tokens per prefill step (rows x longest chunk)
    # Sequences of less urgent classes that keep running while a more urgent one is active.
    max_lower_priority_seqs: int = DEFAULT_MAX_LOWER_PRIORITY_SEQS


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
    # seq_ids back to the queue, giving up slot and blocks (recomputed when readmitted)
    preempted: list[int] = field(default_factory=list)
    prefill: list[PrefillChunk] = field(default_factory=list)
    decode: list[int] = field(default_factory=list)  # seq_ids
    paused: list[int] = field(default_factory=list)  # seq_ids holding a slot, skipped for a more urgent class


def schedule(
    waiting: list[SeqView],
    running: list[SeqView],
    free_slots: list[int],
    free_blocks: int,
    limits: SchedulerLimits,
    last_kind: StepKind = StepKind.IDLE,
) -> StepPlan:
    """Plan one step. ``waiting`` is in arrival order; ``running`` sequences hold slots and blocks."""
    free = sorted(free_slots)
    blocks = free_blocks
    admitted: list[tuple[int, int]] = []
    preempted: list[int] = []
    active = list(running)
    for seq in sorted(waiting, key=lambda s: s.priority):  # stable: arrival order within a priority
        while not free or seq.admit_blocks > blocks - _reserved(active):
            victim = _unstarted_victim(active, seq.priority)
            if victim is None:
                break
            assert victim.slot is not None, "an active sequence always holds a slot"
            active.remove(victim)
            preempted.append(victim.seq_id)
            free.append(victim.slot)
            blocks += victim.held_blocks
        if not free or seq.admit_blocks > blocks - _reserved(active):
            break  # first come, first served: nothing overtakes the head of the queue
        slot = free.pop(0)
        blocks -= seq.admit_blocks
        admitted.append((seq.seq_id, slot))
        active.append(replace(seq, slot=slot, held_blocks=seq.admit_blocks, admit_blocks=0))

    runnable, paused = _split_by_priority(active, limits)
    pending = [s for s in runnable if s.prefill_remaining > 0]
    decoding = [s for s in runnable if s.prefill_remaining <= 0]
    plan = StepPlan(StepKind.IDLE, admitted, preempted, paused=paused)
    if pending and (not decoding or last_kind is not StepKind.PREFILL):
        plan.kind, plan.prefill = StepKind.PREFILL, _prefill_chunks(pending, limits)
    elif decoding:
        just_admitted = {seq_id for seq_id, _ in admitted}
        while sum(s.grow_blocks for s in decoding) > blocks:
            candidates = [s for s in active if s.seq_id not in just_admitted]
            if not candidates:  # unreachable while admission keeps the growth back; stay safe
                decoding = decoding[:-1]
                continue
            victim = max(candidates, key=lambda s: (s.priority, s.seq_id))
            active.remove(victim)
            preempted.append(victim.seq_id)
            blocks += victim.held_blocks
            if victim in decoding:
                decoding.remove(victim)
            if victim.seq_id in paused:
                paused.remove(victim.seq_id)
        if decoding:
            plan.kind, plan.decode = StepKind.DECODE, [s.seq_id for s in decoding]
    return plan


def _reserved(active: list[SeqView]) -> int:
    """Blocks kept back for the running sequences' next tokens."""
    return sum(s.grow_blocks for s in active)


def _unstarted_victim(active: list[SeqView], priority: int) -> SeqView | None:
    """The least urgent, newest slot holder that is less urgent than ``priority`` and computed nothing."""
    candidates = [s for s in active if s.priority > priority and s.num_computed == 0]
    return max(candidates, key=lambda s: (s.priority, s.seq_id), default=None)


def _split_by_priority(active: list[SeqView], limits: SchedulerLimits) -> tuple[list[SeqView], list[int]]:
    """The sequences that may run this step (most urgent class first) and the seq_ids that pause."""
    if not active:
        return [], []
    urgent = min(s.priority for s in active)
    first = [s for s in active if s.priority == urgent]
    rest = sorted((s for s in active if s.priority != urgent), key=lambda s: (s.priority, s.seq_id))
    keep = max(0, limits.max_lower_priority_seqs)
    return first + rest[:keep], [s.seq_id for s in rest[keep:]]


def _prefill_chunks(pending: list[SeqView], limits: SchedulerLimits) -> list[PrefillChunk]:
    """Rows x chunk length stays within the budget; rows are taken in the order given (urgent first)."""
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
