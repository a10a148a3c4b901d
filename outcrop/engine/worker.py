"""``python -m outcrop.engine.worker``: one model copy serving the OpenAI-compatible contract.

    python -m outcrop.engine.worker --model-dir ./my-model --port 8001
    python -m outcrop.engine.worker --model-dir ./my-model --port 8001 --dtype bfloat16 --max-batch 32

The port opens at once; ``GET /health`` answers 503 while the model loads, 200 when it is
ready. SIGTERM drains: new requests are refused, in-flight ones finish (bounded by
``--drain-seconds``), then the process exits 0. A model that fails verification or
loading makes the process exit 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn

from outcrop.engine.auth import protect
from outcrop.engine.block_manager import DEFAULT_BLOCK_SIZE
from outcrop.engine.runtime import (
    DEFAULT_CUDA_MAX_BATCH,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUED,
    WorkerOptions,
    WorkerRuntime,
    WorkerStatus,
)
from outcrop.engine.scheduler import SchedulerLimits
from outcrop.engine.server import create_app
from outcrop.envs import copy_token
from outcrop.errors import OutcropError
from outcrop.logs import NoValuesFormatter

log = logging.getLogger("outcrop.engine.worker")

# Why 60 s: long enough for a few max-length generations on CPU to finish, short enough
# that a scale-down does not hold a node for minutes.
DEFAULT_DRAIN_SECONDS = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m outcrop.engine.worker",
        description="Serve one model folder over the OpenAI-compatible API (a model copy).",
        epilog="example: python -m outcrop.engine.worker --model-dir ./tiny-llama --port 8001",
    )
    p.add_argument("--model-dir", type=Path, required=True, help="Hugging Face safetensors model folder.")
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on (0 = any free port).")
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (default: loopback).")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu).")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="Weight dtype (default: float32 on CPU, bfloat16 on CUDA).",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help=f"Most sequences decoded at once (default: {DEFAULT_MAX_BATCH} on CPU, {DEFAULT_CUDA_MAX_BATCH} on CUDA).",
    )
    p.add_argument(
        "--kv-cache-bytes",
        type=int,
        default=None,
        help="KV-cache budget in bytes (default: half the memory free after loading the weights; "
        "85%% of the free GPU memory).",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=DEFAULT_BLOCK_SIZE,
        help=f"Tokens per KV-cache block (default: {DEFAULT_BLOCK_SIZE}).",
    )
    p.add_argument(
        "--no-prefix-caching",
        dest="prefix_caching",
        action="store_false",
        help="Do not reuse the KV cache of prompt prefixes seen before (on by default).",
    )
    p.add_argument(
        "--engine-in-process",
        dest="core_process",
        action="store_false",
        help="Run the engine core on a thread of the HTTP process instead of its own process "
        "(debugging; the separate process keeps HTTP and detokenizing off the step loop).",
    )
    p.add_argument(
        "--max-model-len", type=int, default=None, help="Cap on prompt + output tokens per request."
    )
    p.add_argument(
        "--max-prefill-tokens",
        type=int,
        default=SchedulerLimits().max_prefill_tokens,
        help="Padded prompt tokens computed per prefill step (chunked prefill).",
    )
    p.add_argument(
        "--max-lower-priority-seqs",
        type=int,
        default=SchedulerLimits().max_lower_priority_seqs,
        help="Sequences of a less urgent priority (e.g. batch, 10) that keep running while a more "
        "urgent one (online, 0) is active; the others pause, keeping their KV cache.",
    )
    p.add_argument(
        "--max-queued",
        type=int,
        default=DEFAULT_MAX_QUEUED,
        help="Sequences that may wait for a slot; beyond that requests get 503 + Retry-After.",
    )
    p.add_argument("--served-name", default=None, help="Model id reported to clients (default: folder name).")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)."
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=DEFAULT_DRAIN_SECONDS,
        help="On SIGTERM, how long in-flight requests may take to finish.",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    if args.block_size < 1:
        p.error("--block-size must be at least 1")
    if args.max_batch is not None and args.max_batch < 1:
        p.error("--max-batch must be at least 1")
    if args.max_prefill_tokens < 1:
        p.error("--max-prefill-tokens must be at least 1")
    if args.max_lower_priority_seqs < 0:
        p.error("--max-lower-priority-seqs must be 0 or more")
    return args


class _DrainingServer(uvicorn.Server):
    """Marks the runtime as draining the moment SIGTERM/SIGINT arrives."""

    runtime: WorkerRuntime

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.runtime.status is WorkerStatus.READY:
            self.runtime.status = WorkerStatus.DRAINING
            log.info(
                "draining: %d request(s) in flight",
                self.runtime.num_unfinished,
            )
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutdown (exit status -15); a drained
        # SIGTERM is a clean stop, so the worker exits 0 instead.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list) and sig == signal.SIGTERM:
            captured[:] = [s for s in captured if s != signal.SIGTERM]


def build_server(args: argparse.Namespace) -> tuple[_DrainingServer, WorkerRuntime]:
    options = WorkerOptions(
        model_dir=args.model_dir,
        served_name=args.served_name,
        device=args.device,
        dtype=args.dtype,
        max_batch=args.max_batch,
        kv_cache_bytes=args.kv_cache_bytes,
        block_size=args.block_size,
        prefix_caching=args.prefix_caching,
        core_process=args.core_process,
        max_model_len=args.max_model_len,
        max_prefill_tokens=args.max_prefill_tokens,
        max_lower_priority_seqs=args.max_lower_priority_seqs,
        threads=args.threads,
        max_queued=args.max_queued,
    )
    runtime = WorkerRuntime(options)
    server_box: list[_DrainingServer] = []

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def load() -> None:
            try:
                runtime.load()
            except OutcropError as exc:
                runtime.failure = exc.message
            except Exception as exc:  # loading third-party files can fail in many ways
                log.exception("loading the model failed")
                runtime.failure = f"{type(exc).__name__}: {exc}"
            if runtime.failure is not None:
                runtime.status = WorkerStatus.FAILED
                print(f"error: cannot serve {args.model_dir}: {runtime.failure}", file=sys.stderr, flush=True)
                server_box[0].should_exit = True
                return
            loop.call_soon_threadsafe(runtime.start_engine, loop)

        threading.Thread(target=load, name="loader", daemon=True).start()
        yield
        runtime.stop_engine()

    app = protect(create_app(runtime, lifespan), copy_token())  # every route but /health needs the token
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(args.drain_seconds),
    )
    server = _DrainingServer(config)
    server.runtime = runtime
    server_box.append(server)
    return server, runtime


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:  # tracebacks without request values (outcrop.logs)
        handler.setFormatter(NoValuesFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    server, runtime = build_server(args)
    server.run()
    return 1 if runtime.status is WorkerStatus.FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
