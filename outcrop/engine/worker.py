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
import sys

from outcrop.engine.block_manager import DEFAULT_BLOCK_SIZE
from outcrop.engine.process import (
    DrainingServer,
    add_model_arguments,
    add_process_arguments,
    build_copy_server,
    configure_logging,
    run_copy,
)
from outcrop.engine.runtime import (
    DEFAULT_CUDA_MAX_BATCH,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUED,
    WorkerOptions,
    WorkerRuntime,
)
from outcrop.engine.scheduler import SchedulerLimits
from outcrop.engine.server import create_app

# Why 60 s: long enough for a few max-length generations on CPU to finish, short enough
# that a scale-down does not hold a node for minutes.
DEFAULT_DRAIN_SECONDS = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m outcrop.engine.worker",
        description="Serve one model folder over the OpenAI-compatible API (a model copy).",
        epilog="example: python -m outcrop.engine.worker --model-dir ./tiny-llama --port 8001",
    )
    add_model_arguments(
        p,
        model_help="Hugging Face safetensors model folder.",
        max_batch_help=f"Most sequences decoded at once (default: {DEFAULT_MAX_BATCH} on CPU, "
        f"{DEFAULT_CUDA_MAX_BATCH} on CUDA).",
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
    add_process_arguments(p, drain_seconds=DEFAULT_DRAIN_SECONDS)
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


def build_server(args: argparse.Namespace) -> tuple[DrainingServer, WorkerRuntime]:
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

    async def stop() -> None:
        runtime.stop_engine()

    server = build_copy_server(
        args, runtime, lambda lifespan: create_app(runtime, lifespan), start=runtime.start_engine, stop=stop
    )
    return server, runtime


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    server, _ = build_server(args)
    return run_copy(server)


if __name__ == "__main__":
    sys.exit(main())
