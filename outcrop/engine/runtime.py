"""One model copy's runtime: load the model in the background, run the engine, and bridge
its outputs to asyncio request handlers.

Two ways to run the engine, with the same API-side behaviour:

* **core process** (the worker's default): the engine core runs in its own process
  (``core``); this process keeps the tokenizer and the ``OutputProcessor``, which a receiver
  thread runs on each step's token ids before handing the text outputs to the event loop.
  A core that dies fails every unfinished request and marks the copy failed.
* **in process** (``--engine-in-process``, tests, embedding): ``Engine`` (core + output
  processor) steps on a thread of this process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch

from outcrop.engine.block_manager import DEFAULT_BLOCK_SIZE
from outcrop.engine.core import CoreClient, build_engine, memory_bytes
from outcrop.engine.engine import Engine, EngineRequest, RequestOutput
from outcrop.engine.guided import CompiledGrammar, Constraint, GrammarCompiler
from outcrop.engine.messages import Abort, AddRequest, CoreFacts, CoreOutput, CoreStats
from outcrop.engine.metrics import EngineMetrics
from outcrop.engine.model_runner import resolve_dtype
from outcrop.engine.output_processor import OutputProcessor
from outcrop.engine.sampling import SamplingParams
from outcrop.engine.scheduler import SchedulerLimits
from outcrop.engine.tokenization import ModelTokenizer
from outcrop.errors import InvalidRequestError, ServiceUnavailableError

log = logging.getLogger(__name__)

# Why 32 on CPU: the benchmark's top concurrency, and where a 2-core CPU stops gaining throughput.
DEFAULT_MAX_BATCH = 32
# Why 256 on CUDA: a decode step's time barely grows with rows until the GPU is compute-bound
# (hundreds of rows); a batch row costs no memory of its own (the KV cache is a shared block
# pool), so the pool, not this, limits what runs. vLLM's default for such GPUs is the same.
DEFAULT_CUDA_MAX_BATCH = 256


def default_max_batch(device: str) -> int:
    """``--max-batch`` when not given: sized for the device."""
    return DEFAULT_CUDA_MAX_BATCH if torch.device(device).type == "cuda" else DEFAULT_MAX_BATCH


# Why 1024: the gateway throttles and sheds load before a copy; this only stops a runaway
# client from queueing unbounded work (and memory) inside one copy.
DEFAULT_MAX_QUEUED = 1024


@dataclass
class WorkerOptions:
    model_dir: Path
    served_name: str | None = None
    device: str = "cpu"
    dtype: str | None = None  # None = float32 on CPU, bfloat16 on CUDA
    max_batch: int | None = None  # None = sized for the device (default_max_batch)
    kv_cache_bytes: int | None = None  # None = a share of the memory free after the weights
    block_size: int = DEFAULT_BLOCK_SIZE  # tokens per KV-cache block
    prefix_caching: bool = True
    max_model_len: int | None = None  # None = the model's max_position_embeddings
    max_prefill_tokens: int = SchedulerLimits().max_prefill_tokens
    max_lower_priority_seqs: int = SchedulerLimits().max_lower_priority_seqs
    threads: int | None = None  # torch intra-op threads; None = torch's default
    max_queued: int = DEFAULT_MAX_QUEUED  # sequences waiting for a slot before new ones get 503
    core_process: bool = False  # True: the engine core in its own process (the worker's default)

    @property
    def model_id(self) -> str:
        return self.served_name or self.model_dir.name

    @property
    def resolved_max_batch(self) -> int:
        return self.max_batch or default_max_batch(self.device)


class WorkerStatus(Enum):
    LOADING = "loading"  # verifying and loading weights; /health answers 503
    READY = "ok"  # serving
    DRAINING = "draining"  # SIGTERM received: no new requests, in-flight ones finish
    FAILED = "failed"  # loading failed (the process exits non-zero) or the engine core died

    def is_terminal(self) -> bool:
        return self is WorkerStatus.FAILED


class WorkerRuntime:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.status = WorkerStatus.LOADING
        self.failure: str | None = None
        self.metrics = EngineMetrics()
        self.engine: Engine | None = None  # in-process mode only
        self.core: CoreClient | None = None  # core-process mode only
        self.processor: OutputProcessor | None = None  # core-process mode (in process: the engine's own)
        self.facts: CoreFacts | None = None
        self.tokenizer: ModelTokenizer | None = None
        self.grammars: GrammarCompiler | None = None  # output constraints, compiled and cached (``guided``)
        self.device = torch.device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        self.loaded_at = int(time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, asyncio.Queue[RequestOutput]] = {}
        self._lock = threading.Lock()  # the output processor: receiver thread vs event loop
        self._last_stats = CoreStats()

    @property
    def model_id(self) -> str:
        return self.options.model_id

    @property
    def loaded(self) -> bool:
        return self.facts is not None

    @property
    def max_model_len(self) -> int:
        assert self.facts is not None
        return self.facts.max_model_len

    @property
    def num_slots(self) -> int:
        assert self.facts is not None
        return self.facts.max_batch

    @property
    def num_unfinished(self) -> int:
        if self.engine is not None:
            return self.engine.num_unfinished
        return self.processor.num_unfinished if self.processor is not None else 0

    def engine_stats(self) -> CoreStats:
        """Running/waiting sequences and free blocks, as of the last step."""
        if self.engine is not None:
            return self.engine.stats
        return self.core.stats if self.core is not None else CoreStats()

    # ---------------------------------------------------------------- lifecycle

    def load(self) -> None:
        """Verify, load weights and tokenizer, allocate the KV cache (blocking)."""
        opts = self.options
        if not opts.core_process:
            self.engine, self.facts, self.tokenizer = build_engine(opts, self.metrics)
        else:
            self.tokenizer = ModelTokenizer(opts.model_dir, self.model_id)
            self.core = CoreClient(opts)
            try:
                self.facts = self.core.wait_ready()
            except BaseException:
                self.core.close()
                self.core = None
                raise
            self.processor = OutputProcessor(
                self.tokenizer.tokenizer, self.tokenizer.eos_token_ids, self.metrics
            )
        self.metrics.kv_cache_bytes.set(self.facts.kv_cache_bytes)
        self.grammars = GrammarCompiler(self.tokenizer.tokenizer, self.facts.vocab_size)

    def start_engine(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.loaded
        self._loop = loop
        self._stop = threading.Event()
        if self.engine is not None:
            self._thread = threading.Thread(
                target=self.engine.run_forever, args=(self._deliver, self._stop), name="engine", daemon=True
            )
            self._thread.start()
        else:
            assert self.core is not None
            self.core.start_receiving(self._on_core_outputs, self._on_core_death)
        self.status = WorkerStatus.READY

    def stop_engine(self) -> None:
        self._stop.set()
        if self.engine is not None:
            self.engine._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.core is not None:
            self.core.close()

    def memory_bytes(self) -> int:
        """GPU memory allocated by the engine (CUDA) or resident memory of the copy's processes (CPU).

        In core-process mode the API process never touches CUDA (a context there would cost
        GPU memory), so on CUDA this is what the core allocated when it loaded: weights + KV pool.
        """
        if self.core is None:
            return memory_bytes(self.device)
        if self.device.type == "cuda":
            return self.facts.memory_bytes if self.facts is not None else 0
        total = memory_bytes(self.device)
        if self.core.alive and self.core.process.pid is not None:
            total += memory_bytes(self.device, self.core.process.pid)
        return total

    # ---------------------------------------------------------------- core process

    def _on_core_outputs(self, outputs: list[CoreOutput], stats: CoreStats) -> None:
        """Receiver thread: text for this step's token ids, stop-string aborts back to the core."""
        assert self.processor is not None and self.core is not None
        with self._lock:
            processed = self.processor.process(outputs)
        if processed.aborts:
            self.core.send(Abort(processed.aborts))
        self.metrics.mirror(stats, self._last_stats)
        self._last_stats = stats
        if processed.outputs:
            self._deliver(processed.outputs)

    def _on_core_death(self, message: str) -> None:
        """Receiver thread: the core is gone; the copy is unhealthy and every request ends now."""
        log.error("%s", message)
        assert self.processor is not None
        with self._lock:
            self.status = WorkerStatus.FAILED
            self.failure = message
            outputs = self.processor.fail_all(message)
        if outputs:
            self._deliver(outputs)

    # ---------------------------------------------------------------- requests

    def _deliver(self, outputs: list[tuple[EngineRequest, RequestOutput]]) -> None:
        """Called on the engine (or receiver) thread once per step; hops to the event loop once."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._dispatch, outputs)

    def _dispatch(self, outputs: list[tuple[EngineRequest, RequestOutput]]) -> None:
        for request, output in outputs:
            queue = self._queues.get(request.request_id)
            if queue is not None:
                queue.put_nowait(output)

    @property
    def max_sequences(self) -> int:
        """The most sequences this copy can ever hold at once: every slot running, the queue full."""
        return self.num_slots + self.options.max_queued

    def check_choices(self, choices: int, prompts: int, n: int) -> None:
        """Refuse (400) a request with more choices than the copy can ever hold; a retry cannot help."""
        if choices > self.max_sequences:
            raise InvalidRequestError(
                f"This request asks for {choices} choices ({prompts} prompt(s) x n={n}), but a copy of "
                f"'{self.model_id}' holds at most {self.max_sequences} sequences at once "
                f"({self.num_slots} generating + {self.options.max_queued} waiting, set by --max-queued). "
                "Send fewer prompts per request or a smaller n.",
                param="n" if n > 1 else "prompt",
                code="too_many_choices",
            )

    def check_capacity(self, new_sequences: int) -> None:
        """Load shedding: refuse (503) rather than queue without bound."""
        unfinished = self.num_unfinished
        queued = unfinished - self.num_slots
        if queued + new_sequences > self.options.max_queued:
            raise ServiceUnavailableError(
                f"This model copy already has {unfinished} sequences in flight and its queue "
                f"(--max-queued {self.options.max_queued}) is full; retry shortly or add copies.",
                retry_after_seconds=1.0,
            )

    async def generate(
        self,
        sequences: list[tuple[str, list[int], SamplingParams]],
        stream: bool = True,
        priority: int = 0,
    ) -> AsyncGenerator[tuple[int, RequestOutput], None]:
        """Submit sequences (request_id, prompt_ids, params); yield ``(index, output)`` until all finish.

        Leaving early (client gone, task cancelled) aborts the unfinished ones at the next step.
        """
        queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        index = {request_id: i for i, (request_id, _, _) in enumerate(sequences)}
        unfinished = set(index)
        requests = [
            EngineRequest(request_id, prompt_ids, params, stream=stream, priority=priority)
            for request_id, prompt_ids, params in sequences
        ]
        for request in requests:
            self._queues[request.request_id] = queue
        self._submit(requests)
        try:
            while unfinished:
                output = await queue.get()
                if output.finished:
                    unfinished.discard(output.request_id)
                yield index[output.request_id], output
        finally:
            for request_id in index:
                self._queues.pop(request_id, None)
            if unfinished:
                self._abort(list(unfinished))

    async def compile_constraint(
        self, constraint: Constraint, kind: str | None = None, count: bool = True
    ) -> str:
        """The grammar for an output constraint (400 if it cannot be used), compiled off the event loop;
        ``count``: a request's own constraint (counted), not a part of one checked on its own."""
        assert self.grammars is not None
        compiled: CompiledGrammar = await asyncio.to_thread(self.grammars.compile, constraint)
        if count:
            self.metrics.constrained_requests.labels(kind or constraint.kind).inc()
        if compiled.cached:
            self.metrics.grammar_cache_hits.inc()
        else:
            self.metrics.grammar_compile_seconds.observe(compiled.compile_seconds)
        return compiled.grammar

    def _submit(self, requests: list[EngineRequest]) -> None:
        if self.engine is not None:
            for request in requests:
                self.engine.add_request(request)
            return
        assert self.processor is not None and self.core is not None
        with self._lock:  # no request slips in after a dying core's fail_all
            if self.status is WorkerStatus.FAILED:
                raise ServiceUnavailableError(
                    f"This model copy cannot serve: {self.failure}", retry_after_seconds=1.0
                )
            for request in requests:
                self.processor.add(request)
        for request in requests:
            self.core.send(
                AddRequest(request.request_id, request.prompt_ids, request.params, request.priority)
            )

    def _abort(self, request_ids: list[str]) -> None:
        """The client left: stop generating for these (their blocks are freed at the core's next step)."""
        if self.engine is not None:
            for request_id in request_ids:
                self.engine.abort(request_id)
            return
        assert self.processor is not None and self.core is not None
        with self._lock:
            for request_id in request_ids:
                self.processor.forget(request_id)
        if self.status is not WorkerStatus.FAILED:
            self.core.send(Abort(request_ids))
