"""The continuous-batching engine core: owns the sequences, runs scheduler decisions on the model.

``EngineCore.step()``: take new requests and aborts, ask the scheduler for a plan, carry out
its preemptions and admissions on the block manager (admission reuses prefix-cache hits, so
a known prefix is not computed again), run one prefill or decode forward over the
sequences' block tables, key the blocks that became full in the prefix cache, sample, end
rows at EOS / ``max_tokens`` / the context limit, free finished sequences' blocks, and
return one ``CoreOutput`` (new token ids) per row. No text is made here: detokenization and
stop strings are the ``output_processor``'s, on the API side.

The core runs in its own process (``core``) behind the worker; ``Engine`` is the same core
with the output processor bolted on, stepping in one process (an in-process engine thread,
tests, benchmarks' ceilings).

A sequence preempted by recompute (``scheduler``) keeps its output so far, its sampler's
generator state and its penalty counts; readmitted, it prefills its prompt plus that output
and continues, so its tokens are those it would have produced without the preemption.

Failures are contained to the smallest unit they belong to. An exception while applying one
sequence's own settings (seeding its generator, sampling its row, decoding its text,
matching its stop strings) fails that sequence alone, as a request error; the rest of the
batch carries on. Only a failure of the batched forward itself (or an engine bug outside
any one row) fails everything that was running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from outcrop.engine.block_manager import BlockManager, block_hashes
from outcrop.engine.guided import CLOSING_MARGIN, GuidedDecoding, closing_reserve
from outcrop.engine.messages import CoreOutput, CoreStats, EngineRequest, RequestOutput, TokenLogprob
from outcrop.engine.metrics import EngineMetrics
from outcrop.engine.model_runner import ModelRunner, StepBatch
from outcrop.engine.output_processor import OutputProcessor
from outcrop.engine.sampling import Sampler, TokenCounts
from outcrop.engine.scheduler import SchedulerLimits, SeqView, StepKind, StepPlan, schedule

log = logging.getLogger(__name__)

# Why 0.5 s: an idle engine wakes this often to notice shutdown even if no request arrives.
IDLE_WAIT_SECONDS = 0.5


__all__ = ["Engine", "EngineCore", "EngineRequest", "RequestOutput", "TokenLogprob"]


@dataclass
class Sequence:
    seq_id: int
    request: EngineRequest
    arrival: float
    slot: int | None = None
    num_cached: int = 0  # tokens in the KV cache
    output_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # prompt + output, the sequence's tokens so far
    prefill_len: int = 0  # tokens to prefill: the prompt, or after a preemption the prompt + output
    hashes: list[bytes] = field(default_factory=list)  # prefix-cache keys of token_ids' full blocks
    generator_state: Any = None  # a preempted seeded sequence's sampler state, restored on readmission
    finish_reason: str | None = None
    admitted_before: bool = False  # a preempted sequence's prompt is counted once
    matcher: Any = None  # the grammar's state (``guided``), constrained sequences only; survives preemption
    closing_reserve: int = 0  # tokens left at which a constrained sequence starts closing (``guided``)

    @property
    def prompt_len(self) -> int:
        return len(self.request.prompt_ids)

    def update_hashes(self, block_size: int) -> list[bytes]:
        if len(self.hashes) < len(self.token_ids) // block_size:
            self.hashes = block_hashes(self.token_ids, block_size, self.hashes)
        return self.hashes


Deliver = Callable[[list[tuple[EngineRequest, RequestOutput]]], None]
Outputs = list[CoreOutput]


class EngineCore:
    def __init__(
        self,
        runner: ModelRunner,
        eos_token_ids: set[int],
        limits: SchedulerLimits | None = None,
        metrics: EngineMetrics | None = None,
        max_batch: int = 32,
        prefix_caching: bool = True,
        hf_tokenizer: Any = None,
    ) -> None:
        assert runner.kv is not None, "the runner needs its KV cache before the engine starts"
        self.runner = runner
        self.eos_token_ids = eos_token_ids
        self.limits = limits or SchedulerLimits()
        self.metrics = metrics or EngineMetrics()
        self.num_slots = max_batch  # rows of the batch; memory is the block pool's
        self.max_model_len = runner.kv.max_model_len
        self.blocks = BlockManager(runner.kv.num_blocks, runner.kv.block_size, prefix_caching)
        self.sampler = Sampler(runner.vocab_size, runner.device)
        self.counts = TokenCounts(self.num_slots, runner.vocab_size, runner.device)
        self.guided: GuidedDecoding | None = None
        if hf_tokenizer is not None:
            self.guided = GuidedDecoding(
                hf_tokenizer, runner.vocab_size, self.num_slots, runner.device, eos_token_ids
            )
        self._inbox: deque[EngineRequest] = deque()
        self._aborts: deque[str] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._next_seq_id = 0
        self.waiting: list[Sequence] = []
        self.running: dict[int, Sequence] = {}  # seq_id -> sequence holding a slot
        self.free_slots: list[int] = list(range(self.num_slots))
        self._last_kind = StepKind.IDLE
        self._paused = 0  # sequences the last step skipped for a more urgent class
        self.stats = CoreStats(free_blocks=self.blocks.num_free)
        self.metrics.kv_cache_bytes.set(runner.kv.bytes_total)

    # ------------------------------------------------------------ thread-safe API

    def add_request(self, request: EngineRequest) -> None:
        with self._lock:
            self._inbox.append(request)
        self._wake.set()

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborts.append(request_id)
        self._wake.set()

    @property
    def num_unfinished(self) -> int:
        return len(self._inbox) + len(self.waiting) + len(self.running)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self._inbox or self._aborts)

    def step_safely(self) -> Outputs:
        """``step()``, but a bug in a step fails what was running instead of killing the core."""
        try:
            return self._step()
        except Exception:
            log.exception("engine step failed; failing the running requests")
            return self._fail_all("The engine failed while generating; see the worker log.")

    # ------------------------------------------------------------ one iteration

    def step(self) -> Outputs:
        return self._step()

    def _step(self) -> Outputs:
        outputs: Outputs = []
        self._take_inbox(outputs)
        plan = schedule(
            self._waiting_views(),
            [self._running_view(s) for s in self.running.values()],
            self.free_slots,
            self.blocks.num_free,
            self.limits,
            self._last_kind,
        )
        self._preempt(plan)
        self._admit(plan, outputs)
        self._paused = len(plan.paused)
        if plan.kind is StepKind.PREFILL:
            self._run_prefill(plan, outputs)
        elif plan.kind is StepKind.DECODE:
            self._run_decode(plan, outputs)
        self._last_kind = plan.kind
        if plan.kind is not StepKind.IDLE:
            self.metrics.steps.labels(plan.kind.value).inc()
            if plan.kind is StepKind.PREFILL:
                self.stats.prefill_steps += 1
            else:
                self.stats.decode_steps += 1
        self._update_gauges()
        return outputs

    def _take_inbox(self, outputs: Outputs) -> None:
        with self._lock:
            new = list(self._inbox)
            self._inbox.clear()
            aborts = set(self._aborts)
            self._aborts.clear()
        now = time.monotonic()
        for request in new:
            seq = Sequence(self._next_seq_id, request, now)
            seq.token_ids = list(request.prompt_ids)
            seq.prefill_len = len(seq.token_ids)
            self._next_seq_id += 1
            if request.params.grammar is not None and not self._start_grammar(seq, outputs):
                continue
            self.waiting.append(seq)
        if not aborts:
            return
        for seq in [s for s in self.waiting if s.request.request_id in aborts]:
            self.waiting.remove(seq)
            seq.finish_reason = "abort"
            outputs.append(CoreOutput(seq.request.request_id, [], finish_reason="abort"))
        for seq in [s for s in self.running.values() if s.request.request_id in aborts]:
            seq.finish_reason = "abort"
            self._release(seq)
            outputs.append(CoreOutput(seq.request.request_id, [], finish_reason="abort"))

    def _start_grammar(self, seq: Sequence, outputs: Outputs) -> bool:
        """Give a constrained sequence its matcher; False (and an error output) if the grammar is bad."""
        try:
            if self.guided is None:
                raise ValueError("this engine was built without a tokenizer, so it cannot constrain output")
            params = seq.request.params
            assert params.grammar is not None
            seq.matcher, shortest = self.guided.new_matcher(params.grammar)
            seq.closing_reserve = max(
                closing_reserve(params.max_tokens), shortest + CLOSING_MARGIN if shortest else 0
            )
        except Exception as exc:
            self._fail_one(seq, "compiling its output constraint", exc, outputs)
            return False
        return True

    def _start_masks(self, seqs: list[Sequence]) -> Future[None] | None:
        """Token masks of the constrained rows about to sample, computed while the forward runs."""
        if self.guided is None:
            return None
        rows = [(s.matcher, s.slot) for s in seqs if s.matcher is not None and s.slot is not None]
        return self.guided.start_masks(rows)

    def _waiting_views(self) -> list[SeqView]:
        """What the scheduler needs of the queue. Only the sequences that could be admitted this
        step (one per free slot or running sequence, in priority order) are priced in blocks."""
        priced = len(self.free_slots) + len(self.running)
        views = []
        bs = self.blocks.block_size
        for rank, seq in enumerate(sorted(self.waiting, key=lambda s: s.request.priority)):
            need, cached = self.blocks.num_blocks + 1, 0  # more than the pool: not admitted this step
            if rank < priced:
                need, cached = self.blocks.admission(seq.update_hashes(bs), seq.prefill_len)
            # ``cached``: its prefix-cache hits, so a first chunk starts after them
            views.append(
                SeqView(seq.seq_id, seq.prefill_len, cached, None, seq.request.priority, admit_blocks=need)
            )
        order = {s.seq_id: i for i, s in enumerate(self.waiting)}
        return sorted(views, key=lambda v: order[v.seq_id])  # the scheduler wants arrival order

    def _running_view(self, seq: Sequence) -> SeqView:
        decoding = seq.num_cached >= seq.prefill_len
        return SeqView(
            seq.seq_id,
            seq.prefill_len,
            min(seq.num_cached, seq.prefill_len),
            seq.slot,
            seq.request.priority,
            grow_blocks=self.blocks.blocks_to_grow(seq.seq_id, seq.num_cached + 1) if decoding else 0,
            held_blocks=len(self.blocks.tables.get(seq.seq_id, ())),
        )

    def _preempt(self, plan: StepPlan) -> None:
        """Preempted sequences give back their slot and blocks and queue again (see the module docstring)."""
        for seq_id in plan.preempted:
            seq = self.running.pop(seq_id)
            assert seq.slot is not None, "a running sequence holds a slot"
            if seq.output_ids:
                self.metrics.preemptions.inc()
                self.stats.preemptions += 1
            seq.generator_state = self.sampler.generator_state(seq.slot)
            self.blocks.free(seq_id)
            self.free_slots.append(seq.slot)
            self.sampler.seed_slot(seq.slot, None)
            seq.slot = None
            seq.num_cached = 0
            seq.prefill_len = len(seq.token_ids)
            self.waiting.append(seq)
        if plan.preempted:
            self.waiting.sort(key=lambda s: s.seq_id)  # back in arrival order

    def _admit(self, plan: StepPlan, outputs: Outputs) -> None:
        if not plan.admitted:
            return
        by_id = {s.seq_id: s for s in self.waiting}
        for seq_id, slot in plan.admitted:
            seq = by_id[seq_id]
            hashes = seq.update_hashes(self.blocks.block_size)
            cached = self.blocks.allocate(seq_id, hashes, seq.prefill_len)
            if cached is None:  # a preempted sequence's blocks were shared after all; wait a step
                continue
            self.metrics.prefix_cache_queries.inc(seq.prefill_len)
            self.metrics.prefix_cache_hits.inc(cached)
            self.stats.prefix_cache_queries += seq.prefill_len
            self.stats.prefix_cache_hits += cached
            self.waiting.remove(seq)
            self.free_slots.remove(slot)
            seq.slot = slot
            seq.num_cached = cached
            self.running[seq_id] = seq
            params = seq.request.params
            try:
                self.counts.start(slot, seq.request.prompt_ids, params.needs_penalties)
                if seq.output_ids and params.needs_penalties:  # readmitted: its output counts too
                    self.counts.record(
                        [slot] * len(seq.output_ids), torch.tensor(seq.output_ids, device=self.runner.device)
                    )
                self.sampler.seed_slot(slot, params.seed)
                if seq.generator_state is not None:
                    self.sampler.restore_generator(slot, seq.generator_state)
                    seq.generator_state = None
            except Exception as exc:  # this sequence's settings, not the engine: fail it alone
                self._fail_one(seq, f"setting up its sampler (seed={params.seed})", exc, outputs)
                continue
            if not seq.admitted_before:
                seq.admitted_before = True
                self.metrics.prompt_tokens.inc(seq.prompt_len)
                self.stats.prompt_tokens += seq.prompt_len

    def _run_prefill(self, plan: StepPlan, outputs: Outputs) -> None:
        chunks = [c for c in plan.prefill if c.seq_id in self.running]  # _admit may have failed some
        if not chunks:
            return
        seqs = [self.running[c.seq_id] for c in chunks]
        # A chunk starts where the sequence's cache ends: the plan priced a just-admitted sequence's
        # prefix hits before admission, and another admission in this step may have evicted some.
        chunks = [
            replace(
                c, start=s.num_cached, length=max(1, min(c.start + c.length, s.prefill_len) - s.num_cached)
            )
            if c.start != s.num_cached
            else c
            for s, c in zip(seqs, chunks, strict=True)
        ]
        batch = StepBatch(
            token_ids=[s.token_ids[c.start : c.start + c.length] for s, c in zip(seqs, chunks, strict=True)],
            block_tables=[self.blocks.tables[s.seq_id] for s in seqs],
            starts=[c.start for c in chunks],
        )
        masks = self._start_masks(
            [s for s, c in zip(seqs, chunks, strict=True) if c.start + c.length >= s.prefill_len]
        )
        logits = self._forward(batch)  # [rows, vocab]
        done_rows = []
        for row, (seq, chunk) in enumerate(zip(seqs, chunks, strict=True)):
            seq.num_cached = chunk.start + chunk.length
            self.blocks.cache_computed(seq.seq_id, seq.update_hashes(self.blocks.block_size), seq.num_cached)
            if seq.num_cached >= seq.prefill_len:
                done_rows.append(row)
        if done_rows:
            if len(done_rows) < len(seqs):
                logits = logits[torch.tensor(done_rows, device=logits.device)]
            self._sample_and_emit([seqs[r] for r in done_rows], logits, outputs, masks)
        elif masks is not None:
            masks.result()

    def _run_decode(self, plan: StepPlan, outputs: Outputs) -> None:
        seqs = sorted((self.running[i] for i in plan.decode if i in self.running), key=lambda s: s.slot or 0)
        if not seqs:
            return
        for s in seqs:  # the scheduler kept these blocks free
            grown = self.blocks.grow(s.seq_id, s.num_cached + 1)
            assert grown, "the scheduler keeps back the blocks decoding sequences need"
        batch = StepBatch(
            token_ids=[[s.token_ids[-1]] for s in seqs],
            block_tables=[self.blocks.tables[s.seq_id] for s in seqs],
            starts=[s.num_cached for s in seqs],
        )
        masks = self._start_masks(seqs)
        logits = self._forward(batch)
        bs = self.blocks.block_size
        for s in seqs:
            s.num_cached += 1
            if s.num_cached % bs == 0:  # a block just filled up: key it for the prefix cache
                self.blocks.cache_computed(s.seq_id, s.update_hashes(bs), s.num_cached)
        self._sample_and_emit(seqs, logits, outputs, masks)

    def _forward(self, batch: StepBatch) -> torch.Tensor:
        started = time.perf_counter()
        logits = self.runner.forward(batch)
        spent = time.perf_counter() - started  # host time; on CUDA the launches, not the kernels
        self.stats.forward_seconds += spent
        self.metrics.forward_seconds.inc(spent)
        return logits

    def _sample_and_emit(
        self, seqs: list[Sequence], logits: torch.Tensor, outputs: Outputs, masks: Future[None] | None = None
    ) -> None:
        if masks is not None:
            masks.result()  # the constrained rows' token masks, computed during the forward
        sampled = self._sample_rows(seqs, logits, outputs)
        self.metrics.generation_tokens.inc(len(sampled))
        self.stats.generation_tokens += len(sampled)
        for seq, token, logprobs in sampled:
            self._emit(seq, token, logprobs, outputs)

    def _sample_rows(
        self, seqs: list[Sequence], logits: torch.Tensor, outputs: Outputs
    ) -> list[tuple[Sequence, int, list[tuple[int, float, list[tuple[int, float]]]]]]:
        """One token per sequence; if the batched call fails, each row alone, failing the bad rows.

        logits: [len(seqs), vocab]. A retried batch costs seeded rows their bit-exact
        reproducibility for this one step (their generators advanced in the failed call).
        """
        try:
            return self._sample_batch(seqs, logits)
        except Exception as exc:
            if len(seqs) == 1:
                self._fail_one(seqs[0], "sampling its next token", exc, outputs)
                return []
        sampled = []
        for row, seq in enumerate(seqs):
            try:
                sampled.extend(self._sample_batch([seq], logits[row : row + 1]))
            except Exception as exc:
                self._fail_one(seq, "sampling its next token", exc, outputs)
        return sampled

    def _sample_batch(
        self, seqs: list[Sequence], logits: torch.Tensor
    ) -> list[tuple[Sequence, int, list[tuple[int, float, list[tuple[int, float]]]]]]:
        slots = [s.slot for s in seqs]
        allowed = None
        if self.guided is not None:
            rows = [row for row, s in enumerate(seqs) if s.matcher is not None]
            if rows:
                allowed = (rows, self.guided.allowed([slots[r] for r in rows]))  # type: ignore[misc]
        result = self.sampler.sample(
            logits,
            slots,  # type: ignore[arg-type]
            [s.request.params for s in seqs],
            self.counts,
            allowed,
        )
        sampled = []
        for row, seq in enumerate(seqs):
            token = result.token_ids[row]
            if seq.matcher is not None and self._closing(seq):
                assert self.guided is not None and seq.slot is not None
                token = self.guided.closing_token(seq.slot) or token
            logprobs: list[tuple[int, float, list[tuple[int, float]]]] = []
            if result.logprobs is not None and seq.request.params.logprobs is not None:
                top = result.top_logprobs[row] if result.top_logprobs else []
                logprobs.append((token, result.logprobs[row], top))
            sampled.append((seq, token, logprobs))
        return sampled

    def _closing(self, seq: Sequence) -> bool:
        """Whether a constrained sequence is down to its closing reserve (see ``guided``)."""
        left = min(seq.request.params.max_tokens - len(seq.output_ids), self.max_model_len - seq.num_cached)
        return left <= seq.closing_reserve

    def _emit(
        self,
        seq: Sequence,
        token: int,
        logprobs: list[tuple[int, float, list[tuple[int, float]]]],
        outputs: Outputs,
    ) -> None:
        """Record one sampled token, end the row at EOS or a length limit, queue its output."""
        params = seq.request.params
        if seq.matcher is not None and not seq.matcher.consume_token(token):
            error = seq.matcher.get_error() or f"token {token} is not allowed here"
            self._fail_one(seq, "following its output constraint", ValueError(error), outputs)
            return
        seq.output_ids.append(token)
        seq.token_ids.append(token)
        if token in self.eos_token_ids and (not params.ignore_eos or seq.matcher is not None):
            seq.finish_reason = "stop"
        elif seq.matcher is not None and seq.matcher.is_stopped():
            seq.finish_reason = "stop"  # the grammar is complete: nothing else may follow
        elif len(seq.output_ids) >= params.max_tokens or seq.num_cached >= self.max_model_len:
            seq.finish_reason = "length"
        outputs.append(CoreOutput(seq.request.request_id, [token], logprobs, seq.finish_reason))
        if seq.finish_reason is not None:
            self._release(seq)

    def _release(self, seq: Sequence) -> None:
        self.blocks.free(seq.seq_id)
        if seq.slot is not None:
            self.running.pop(seq.seq_id, None)
            self.free_slots.append(seq.slot)
            self.sampler.seed_slot(seq.slot, None)
            seq.slot = None

    def finish_now(self, request_ids: list[str]) -> None:
        """End these requests at once, without an output (the API side finished them: a stop string)."""
        ids = set(request_ids)
        for seq in [s for s in self.running.values() if s.request.request_id in ids]:
            seq.finish_reason = "stop"
            self._release(seq)
        self.waiting = [s for s in self.waiting if s.request.request_id not in ids]

    def _fail_one(self, seq: Sequence, doing: str, exc: BaseException, outputs: Outputs) -> None:
        """Fail one sequence whose own settings broke; the rest of the batch is untouched."""
        log.warning("request %s failed while %s", seq.request.request_id, doing, exc_info=exc)
        seq.finish_reason = "error"
        self._release(seq)
        error = (
            f"This request failed on the model copy while {doing}: {type(exc).__name__}: {exc}. "
            "Other requests were not affected; check this request's parameters and content."
        )
        outputs.append(CoreOutput(seq.request.request_id, [], [], "error", error, True))

    def _fail_all(self, message: str) -> Outputs:
        outputs = []
        for seq in [*self.running.values(), *self.waiting]:
            seq.finish_reason = "error"
            self._release(seq)
            outputs.append(CoreOutput(seq.request.request_id, [], [], "error", message, False))
        self.waiting.clear()
        return outputs

    def _update_gauges(self) -> None:
        waiting = len(self.waiting) + len(self._inbox)
        usage = self.blocks.num_used / self.blocks.num_blocks
        self.metrics.running.set(len(self.running))
        self.metrics.paused.set(self._paused)
        self.metrics.waiting.set(waiting)
        self.metrics.kv_cache_usage.set(usage)
        stats = self.stats
        stats.running, stats.waiting, stats.paused = len(self.running), waiting, self._paused
        stats.kv_cache_usage, stats.free_blocks = usage, self.blocks.num_free


class Engine(EngineCore):
    """The core and the output processor in one process: ``step()`` returns text outputs.

    Used by the worker's in-process mode (``--engine-in-process``), tests and benchmarks; the
    worker's default runs the core in its own process (``core``) and the processor beside HTTP.
    """

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Any,
        eos_token_ids: set[int],
        limits: SchedulerLimits | None = None,
        metrics: EngineMetrics | None = None,
        max_batch: int = 32,
        prefix_caching: bool = True,
    ) -> None:
        super().__init__(runner, eos_token_ids, limits, metrics, max_batch, prefix_caching, tokenizer)
        self.tokenizer = tokenizer
        self.processor = OutputProcessor(tokenizer, eos_token_ids, self.metrics)
        self._new: deque[EngineRequest] = deque()

    def add_request(self, request: EngineRequest) -> None:
        with self._lock:
            self._new.append(request)
        super().add_request(request)

    def step(self) -> list[tuple[EngineRequest, RequestOutput]]:  # type: ignore[override]
        with self._lock:
            new = list(self._new)
            self._new.clear()
        for request in new:
            self.processor.add(request)
        processed = self.processor.process(self.step_safely())
        if processed.aborts:
            self.finish_now(processed.aborts)
            self._update_gauges()
        return processed.outputs

    def run_forever(self, deliver: Deliver, stop: threading.Event) -> None:
        """The engine thread's body: step while there is work, sleep when idle."""
        while not stop.is_set():
            outputs = self.step()
            if outputs:
                deliver(outputs)
            if not self.running and not self.waiting:
                self._wake.wait(IDLE_WAIT_SECONDS)
                self._wake.clear()
