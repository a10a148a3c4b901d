"""The engine-core process, and the API side's handle on it.

    API process (worker: HTTP, tokenizing, output processing)
        | AddRequest / Abort / Shutdown        (ZeroMQ PUSH -> PULL, MessagePack)
        v
    engine-core process (scheduler, KV cache, model: ``EngineCore``)
        | Ready once, then StepOutputs per step (every row's new token ids, stats)
        v
    API process: OutputProcessor -> per-request queues -> SSE / JSON

Why a process: the HTTP server, SSE encoding and detokenization share a GIL with whatever
runs beside them; in its own process the core's loop only schedules and runs the model,
and the API side's per-token Python runs in parallel with the next step (vLLM v1's shape).

Why ZeroMQ + msgspec: ZeroMQ's PUSH/PULL over an ``ipc://`` socket is a well-kept,
message-framed, lock-free queue between two processes (what vLLM v1 uses for the same
hop), with pollable sockets and no broker; msgspec encodes typed structs to MessagePack at
C speed and validates what it decodes. A step's message is one small frame, whatever the
batch size. ``multiprocessing`` pipes would pickle (slower, and unsafe to unpickle from a
peer), and a socket protocol of our own would need its own framing and tests.

Failure: if the core dies, the API side notices at once (the process sentinel is polled
with the socket), marks the copy failed (``/health`` 503, so the gateway replaces it) and
ends every unfinished request with an error; nothing waits forever. If the API process
dies (even by SIGKILL), the core sees its parent change within a step and exits at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import torch
import zmq

from outcrop.engine.engine import EngineCore
from outcrop.engine.kv_cache import KVCache, default_kv_budget_bytes, kv_bytes_per_token, plan_kv_cache
from outcrop.engine.loader import verify_model_dir
from outcrop.engine.messages import (
    Abort,
    AddRequest,
    CoreFacts,
    CoreOutput,
    CoreStats,
    EngineRequest,
    FromCore,
    LoadFailed,
    Ready,
    Shutdown,
    StepOutputs,
    ToCore,
)
from outcrop.engine.metrics import EngineMetrics
from outcrop.engine.model_runner import ModelRunner, resolve_dtype
from outcrop.engine.scheduler import SchedulerLimits
from outcrop.engine.tokenization import ModelTokenizer
from outcrop.errors import ConfigError, OutcropError

if TYPE_CHECKING:
    from outcrop.engine.runtime import WorkerOptions

log = logging.getLogger(__name__)

# Why 0.5 s: an idle core wakes this often to notice that its parent is gone.
IDLE_POLL_MS = 500
# Why 600 s: loading a large model from a slow disk; the API side's /health says "loading" meanwhile.
LOAD_TIMEOUT_SECONDS = 600.0


def memory_bytes(device: torch.device, pid: int | None = None) -> int:
    """GPU memory this process allocated (CUDA) or a process's resident set (CPU)."""
    if device.type == "cuda" and pid is None:
        return int(torch.cuda.memory_allocated(device))
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def build_core(options: WorkerOptions, metrics: EngineMetrics | None = None) -> tuple[EngineCore, CoreFacts]:
    """Verify and load the model, size and allocate the KV cache, build the core (blocking)."""
    from outcrop.engine.engine import Engine

    core, facts, _tok = _build(options, metrics, with_text=False)
    assert not isinstance(core, Engine)
    return core, facts


def build_engine(options: WorkerOptions, metrics: EngineMetrics) -> tuple[Any, CoreFacts, ModelTokenizer]:
    """The in-process variant: the core with its output processor (``Engine``) and the tokenizer."""
    return _build(options, metrics, with_text=True)


def _build(
    options: WorkerOptions, metrics: EngineMetrics | None, with_text: bool
) -> tuple[Any, CoreFacts, ModelTokenizer]:
    from outcrop.engine.engine import Engine

    device = torch.device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but no CUDA device is visible; use --device cpu.")
    if options.threads:
        torch.set_num_threads(options.threads)
    started = time.monotonic()
    verify_model_dir(options.model_dir)
    tokenizer = ModelTokenizer(options.model_dir, options.model_id)
    runner = ModelRunner.load(options.model_dir, device, dtype)
    max_len = runner.max_position_embeddings
    if options.max_model_len:
        max_len = min(max_len, options.max_model_len)
    budget = options.kv_cache_bytes or default_kv_budget_bytes(device)  # after the weights are in
    per_token = kv_bytes_per_token(runner.num_layers, runner.num_kv_heads, runner.head_dim, dtype)
    plan = plan_kv_cache(budget, per_token, max_len, options.block_size, options.resolved_max_batch)
    runner.attach_cache(KVCache(plan, runner.num_layers, runner.num_kv_heads, runner.head_dim, dtype, device))
    limits = SchedulerLimits(
        max_prefill_tokens=options.max_prefill_tokens, max_lower_priority_seqs=options.max_lower_priority_seqs
    )
    metrics = metrics or EngineMetrics()
    core: EngineCore
    if with_text:
        core = Engine(
            runner,
            tokenizer.tokenizer,
            tokenizer.eos_token_ids,
            limits,
            metrics,
            max_batch=options.resolved_max_batch,
            prefix_caching=options.prefix_caching,
        )
    else:
        core = EngineCore(
            runner,
            tokenizer.eos_token_ids,
            limits,
            metrics,
            max_batch=options.resolved_max_batch,
            prefix_caching=options.prefix_caching,
        )
    facts = CoreFacts(
        max_model_len=plan.max_model_len,
        max_batch=options.resolved_max_batch,
        vocab_size=runner.vocab_size,
        num_blocks=plan.num_blocks,
        block_size=plan.block_size,
        prefix_caching=options.prefix_caching,
        kv_cache_bytes=plan.bytes_total,
        weight_bytes=runner.weight_bytes(),
        memory_bytes=memory_bytes(device),
    )
    log.info(
        "loaded %s in %.1fs: %s %s, max batch %d, KV cache %d blocks x %d tokens (%.0f MiB, prefix caching %s), "
        "max model len %d",
        options.model_id,
        time.monotonic() - started,
        device,
        str(dtype).removeprefix("torch."),
        facts.max_batch,
        plan.num_blocks,
        plan.block_size,
        plan.bytes_total / 2**20,
        "on" if options.prefix_caching else "off",
        plan.max_model_len,
    )
    return core, facts, tokenizer


# ---------------------------------------------------------------- the core process


def core_main(options: WorkerOptions, to_core: str, from_core: str, parent_pid: int) -> None:
    """The engine-core process's body (a ``multiprocessing`` spawn target)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s [core]: %(message)s")
    ctx = zmq.Context()
    inbox = ctx.socket(zmq.PULL)
    inbox.connect(to_core)
    outbox = ctx.socket(zmq.PUSH)
    outbox.setsockopt(zmq.SNDHWM, 0)  # never block a step on a slow reader; messages are small
    outbox.connect(from_core)
    encode = msgspec.msgpack.Encoder().encode
    decode = msgspec.msgpack.Decoder(ToCore).decode  # type: ignore[arg-type]
    try:
        core, facts = build_core(options)
    except OutcropError as exc:
        outbox.send(encode(LoadFailed(exc.message)))
        outbox.close(linger=5000)
        return
    except Exception as exc:  # loading third-party files can fail in many ways
        log.exception("loading the model failed")
        outbox.send(encode(LoadFailed(f"{type(exc).__name__}: {exc}")))
        outbox.close(linger=5000)
        return
    outbox.send(encode(Ready(facts)))
    poller = zmq.Poller()
    poller.register(inbox, zmq.POLLIN)
    while True:
        if poller.poll(0 if core.has_work else IDLE_POLL_MS):
            while True:
                try:
                    message = decode(inbox.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if isinstance(message, AddRequest):
                    core.add_request(
                        EngineRequest(
                            message.request_id, message.prompt_ids, message.params, priority=message.priority
                        )
                    )
                elif isinstance(message, Abort):
                    for request_id in message.request_ids:
                        core.abort(request_id)
                else:
                    assert isinstance(message, Shutdown)
                    outbox.close(linger=1000)
                    return
        if os.getppid() != parent_pid:
            # Exit at once: a normal exit would wait on the outbox's unsent outputs (ZeroMQ's
            # linger) for a reader that is gone, holding the model's memory meanwhile.
            log.warning("the API process is gone; the engine core exits")
            os._exit(0)
        if not core.has_work:
            continue
        outputs = core.step_safely()
        outbox.send(encode(StepOutputs(outputs, core.stats)))


# ---------------------------------------------------------------- the API side's handle


class CoreClient:
    """Starts the core process and talks to it; see the module docstring.

    ``on_outputs`` is called on the receiver thread with each batch of core outputs (the
    runtime runs the output processor there); ``on_death`` once, if the core dies.
    """

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self._dir = tempfile.mkdtemp(prefix="outcrop-core-")
        to_core, from_core = f"ipc://{self._dir}/in", f"ipc://{self._dir}/out"
        self._ctx = zmq.Context()
        self._send_lock = threading.Lock()
        self._outbox = self._ctx.socket(zmq.PUSH)
        self._outbox.setsockopt(zmq.SNDHWM, 0)  # the event loop never blocks on a send
        self._outbox.bind(to_core)
        self._inbox = self._ctx.socket(zmq.PULL)
        self._inbox.bind(from_core)
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(FromCore).decode  # type: ignore[arg-type]
        spawn = multiprocessing.get_context("spawn")
        self.process = spawn.Process(
            target=core_main, args=(options, to_core, from_core, os.getpid()), name="engine-core", daemon=True
        )
        self.process.start()
        self.stats = CoreStats()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def wait_ready(self, timeout: float = LOAD_TIMEOUT_SECONDS) -> CoreFacts:
        """Block until the core has loaded the model; raise ``ConfigError`` with its reason if it could not."""
        poller = zmq.Poller()
        poller.register(self._inbox, zmq.POLLIN)
        poller.register(self.process.sentinel, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = dict(poller.poll(200))
            if self._inbox in events:
                message = self._decode(self._inbox.recv())
                if isinstance(message, Ready):
                    return message.facts
                if isinstance(message, LoadFailed):
                    self.process.join(timeout=10)
                    raise ConfigError(message.message)
            if self.process.sentinel in events or not self.process.is_alive():
                raise ConfigError(
                    f"The engine core process exited with code {self.process.exitcode} while loading the "
                    "model; see the worker log."
                )
        self.close()
        raise ConfigError(
            f"The engine core did not load the model within {timeout:.0f}s; see the worker log."
        )

    def start_receiving(
        self, on_outputs: Callable[[list[CoreOutput], CoreStats], None], on_death: Callable[[str], None]
    ) -> None:
        self._thread = threading.Thread(
            target=self._receive, args=(on_outputs, on_death), name="core-outputs", daemon=True
        )
        self._thread.start()

    def _receive(
        self, on_outputs: Callable[[list[CoreOutput], CoreStats], None], on_death: Callable[[str], None]
    ) -> None:
        poller = zmq.Poller()
        poller.register(self._inbox, zmq.POLLIN)
        poller.register(self.process.sentinel, zmq.POLLIN)
        while not self._stop.is_set():
            events = dict(poller.poll(200))
            if self._inbox in events:
                outputs: list[CoreOutput] = []
                while True:  # everything that arrived, handed on at once
                    try:
                        message = self._decode(self._inbox.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    if isinstance(message, StepOutputs):
                        outputs.extend(message.outputs)
                        self.stats = message.stats
                on_outputs(outputs, self.stats)
            if self.process.sentinel in events and not self._stop.is_set():
                self.process.join(timeout=1)
                on_death(
                    f"The engine core process of this model copy exited (code {self.process.exitcode}); "
                    "the request could not finish. Retry: the copy is being replaced."
                )
                return

    def send(self, message: AddRequest | Abort | Shutdown) -> None:
        with self._send_lock:
            self._outbox.send(self._encode(message))

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self) -> None:
        self._stop.set()
        if self.process.is_alive():
            try:
                self.send(Shutdown())
            except zmq.ZMQError:
                pass
            self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(timeout=5)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._outbox.close(linger=0)
        self._inbox.close(linger=0)
        self._ctx.term()
        for name in ("in", "out"):
            Path(self._dir, name).unlink(missing_ok=True)
        Path(self._dir).rmdir()
