"""What every copy process shares (the text worker and the embedding worker): its command-line
options, the background load behind an open port, the copy token, and the SIGTERM drain.

A copy's runtime needs ``load()`` (blocking; raises on a model it cannot serve), ``status`` (a
:class:`WorkerStatus`) and ``failure`` (the reason, once loading failed).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI

from outcrop.engine.auth import protect
from outcrop.engine.runtime import WorkerStatus
from outcrop.envs import copy_token
from outcrop.errors import ModelNotReadyError, OutcropError, ServiceUnavailableError
from outcrop.logs import NoValuesFormatter

log = logging.getLogger("outcrop.engine.worker")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CopyRuntime(Protocol):
    status: WorkerStatus
    failure: str | None

    def load(self) -> None: ...


def require_ready(status: WorkerStatus, model_id: str) -> None:
    """A request may be served: 503 while draining (go to another copy), ModelNotReady while loading."""
    if status is WorkerStatus.DRAINING:
        raise ServiceUnavailableError("This model copy is shutting down; send the request to another copy.")
    if status is not WorkerStatus.READY:
        raise ModelNotReadyError(model_id)


def add_model_arguments(p: argparse.ArgumentParser, *, model_help: str, max_batch_help: str) -> None:
    """The options that say what to serve and where: folder, port, host, device, dtype, batch size."""
    p.add_argument("--model-dir", type=Path, required=True, help=model_help)
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on (0 = any free port).")
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (default: loopback).")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu).")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="Weight dtype (default: float32 on CPU, bfloat16 on CUDA).",
    )
    p.add_argument("--max-batch", type=int, default=None, help=max_batch_help)


def add_process_arguments(p: argparse.ArgumentParser, *, drain_seconds: float) -> None:
    """The options of the process itself: the name it reports, threads, drain time, log level."""
    p.add_argument("--served-name", default=None, help="Model id reported to clients (default: folder name).")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)."
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=drain_seconds,
        help="On SIGTERM, how long in-flight requests may take to finish.",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


class DrainingServer(uvicorn.Server):
    """Marks the runtime as draining the moment SIGTERM/SIGINT arrives."""

    runtime: CopyRuntime

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.runtime.status is WorkerStatus.READY:
            self.runtime.status = WorkerStatus.DRAINING
            in_flight = getattr(self.runtime, "num_unfinished", None)
            if in_flight is not None:
                log.info("draining: %d request(s) in flight", in_flight)
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutdown (exit status -15); a drained
        # SIGTERM is a clean stop, so the worker exits 0 instead.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list) and sig == signal.SIGTERM:
            captured[:] = [s for s in captured if s != signal.SIGTERM]


def build_copy_server(
    args: argparse.Namespace,
    runtime: CopyRuntime,
    make_app: Callable[[Any], FastAPI],
    *,
    start: Callable[[asyncio.AbstractEventLoop], None],
    stop: Callable[[], Awaitable[None]],
) -> DrainingServer:
    """The copy's server: the port opens at once, the model loads on a thread (``/health`` 503
    meanwhile), then ``start`` runs on the event loop; a model that cannot load stops the process
    with the reason on stderr. Every route but /health needs the copy token."""
    server_box: list[DrainingServer] = []

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
            loop.call_soon_threadsafe(start, loop)

        threading.Thread(target=load, name="loader", daemon=True).start()
        yield
        await stop()

    app = protect(make_app(lifespan), copy_token())
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(args.drain_seconds),
    )
    server = DrainingServer(config)
    server.runtime = runtime
    server_box.append(server)
    return server


def run_copy(server: DrainingServer) -> int:
    """Serve until stopped; exit status 1 if the model could not be loaded."""
    server.run()
    return 1 if server.runtime.status is WorkerStatus.FAILED else 0


def configure_logging(level: str) -> None:
    """Log lines with tracebacks but without request values (outcrop.logs)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(NoValuesFormatter(LOG_FORMAT))
