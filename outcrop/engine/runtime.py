"""One model copy's runtime: load the model in the background, run the engine thread,
and bridge engine outputs to asyncio request handlers.
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
from outcrop.engine.engine import Engine, EngineRequest, RequestOutput
from outcrop.engine.kv_cache import KVCache, default_kv_budget_bytes, kv_bytes_per_token, plan_kv_cache
from outcrop.engine.loader import verify_model_dir
from outcrop.engine.metrics import EngineMetrics
from outcrop.engine.model_runner import ModelRunner, resolve_dtype
from outcrop.engine.sampling import SamplingParams
from outcrop.engine.scheduler import SchedulerLimits
from outcrop.engine.tokenization import ModelTokenizer
from outcrop.errors import ConfigError, InvalidRequestError, ServiceUnavailableError

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
    FAILED = "failed"  # loading failed; the process exits non-zero

    def is_terminal(self) -> bool:
        return self is WorkerStatus.FAILED


class WorkerRuntime:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.status = WorkerStatus.LOADING
        self.failure: str | None = None
        self.metrics = EngineMetrics()
        self.engine: Engine | None = None
        self.tokenizer: ModelTokenizer | None = None
        self.device = torch.device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        self.loaded_at = int(time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, asyncio.Queue[RequestOutput]] = {}

    @property
    def model_id(self) -> str:
        return self.options.model_id

    @property
    def max_model_len(self) -> int:
        assert self.engine is not None
        return self.engine.max_model_len

    # ---------------------------------------------------------------- lifecycle

    def load(self) -> None:
        """Verify, load weights and tokenizer, allocate the KV cache (blocking)."""
        opts = self.options
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was given but no CUDA device is visible; use --device cpu.")
        if opts.threads:
            torch.set_num_threads(opts.threads)
        started = time.monotonic()
        verify_model_dir(opts.model_dir)
        self.tokenizer = ModelTokenizer(opts.model_dir, self.model_id)
        runner = ModelRunner.load(opts.model_dir, self.device, self.dtype)
        max_len = runner.max_position_embeddings
        if opts.max_model_len:
            max_len = min(max_len, opts.max_model_len)
        budget = opts.kv_cache_bytes or default_kv_budget_bytes(self.device)
        per_token = kv_bytes_per_token(runner.num_layers, runner.num_kv_heads, runner.head_dim, self.dtype)
        plan = plan_kv_cache(budget, per_token, max_len, opts.block_size)
        runner.attach_cache(
            KVCache(plan, runner.num_layers, runner.num_kv_heads, runner.head_dim, self.dtype, self.device)
        )
        self.engine = Engine(
            runner,
            self.tokenizer.tokenizer,
            self.tokenizer.eos_token_ids,
            SchedulerLimits(
                max_prefill_tokens=opts.max_prefill_tokens,
                max_lower_priority_seqs=opts.max_lower_priority_seqs,
            ),
            self.metrics,
            max_batch=opts.resolved_max_batch,
            prefix_caching=opts.prefix_caching,
        )
        log.info(
            "loaded %s in %.1fs: %s %s, max batch %d, KV cache %d blocks x %d tokens (%.0f MiB, "
            "prefix caching %s), max model len %d",
            self.model_id,
            time.monotonic() - started,
            self.device,
            str(self.dtype).removeprefix("torch."),
            opts.resolved_max_batch,
            plan.num_blocks,
            plan.block_size,
            plan.bytes_total / 2**20,
            "on" if opts.prefix_caching else "off",
            plan.max_model_len,
        )

    def start_engine(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.engine is not None
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.engine.run_forever, args=(self._deliver, self._stop), name="engine", daemon=True
        )
        self._thread.start()
        self.status = WorkerStatus.READY

    def stop_engine(self) -> None:
        self._stop.set()
        if self.engine is not None:
            self.engine._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def memory_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.memory_allocated(self.device))
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    # ---------------------------------------------------------------- requests

    def _deliver(self, outputs: list[tuple[EngineRequest, RequestOutput]]) -> None:
        """Called on the engine thread once per step; hops to the event loop once."""
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
        assert self.engine is not None
        return self.engine.num_slots + self.options.max_queued

    def check_choices(self, choices: int, prompts: int, n: int) -> None:
        """Refuse (400) a request with more choices than the copy can ever hold; a retry cannot help."""
        if choices > self.max_sequences:
            assert self.engine is not None
            raise InvalidRequestError(
                f"This request asks for {choices} choices ({prompts} prompt(s) x n={n}), but a copy of "
                f"'{self.model_id}' holds at most {self.max_sequences} sequences at once "
                f"({self.engine.num_slots} generating + {self.options.max_queued} waiting, set by --max-queued). "
                "Send fewer prompts per request or a smaller n.",
                param="n" if n > 1 else "prompt",
                code="too_many_choices",
            )

    def check_capacity(self, new_sequences: int) -> None:
        """Load shedding: refuse (503) rather than queue without bound."""
        assert self.engine is not None
        queued = self.engine.num_unfinished - self.engine.num_slots
        if queued + new_sequences > self.options.max_queued:
            raise ServiceUnavailableError(
                f"This model copy already has {self.engine.num_unfinished} sequences in flight and its queue "
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
        assert self.engine is not None
        queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        index = {request_id: i for i, (request_id, _, _) in enumerate(sequences)}
        unfinished = set(index)
        for request_id, prompt_ids, params in sequences:
            self._queues[request_id] = queue
            self.engine.add_request(
                EngineRequest(request_id, prompt_ids, params, stream=stream, priority=priority)
            )
        try:
            while unfinished:
                output = await queue.get()
                if output.finished:
                    unfinished.discard(output.request_id)
                yield index[output.request_id], output
        finally:
            for request_id in index:
                self._queues.pop(request_id, None)
            for request_id in unfinished:
                self.engine.abort(request_id)
