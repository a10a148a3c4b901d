"""``python -m outcrop.engine.embedding_worker``: one copy of a sentence-embedding model.

    python -m outcrop.engine.embedding_worker --model-dir ./my-embedder --port 8001

The same copy contract as the text worker (:mod:`outcrop.engine.worker`): the port opens at
once, ``GET /health`` answers 503 while the model loads and 200 when it is ready, every route
but ``/health`` needs the gateway's token (:mod:`outcrop.engine.auth`), ``/metrics`` is
Prometheus text, SIGTERM drains. It serves ``POST /v1/embeddings`` in OpenAI's shape;
``/v1/completions`` and ``/v1/chat/completions`` answer 400 (an embedding model generates no text).

Batching: every request's inputs go into one queue; a single loop takes whatever has
arrived (up to ``--max-batch`` inputs), runs it through the encoder off the event loop (sorted
by length and cut into forwards of at most ``--max-batch-tokens`` padded tokens), and
answers each request its slice. While a forward runs, new requests queue up for the next one,
so under load batches fill by themselves and one request alone never waits for company.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from outcrop.engine.embedding_model import DEFAULT_MAX_BATCH_TOKENS, EmbeddingModel
from outcrop.engine.embedding_protocol import EmbeddingHealth, EmbeddingRequest, check_inputs
from outcrop.engine.process import (
    DrainingServer,
    add_model_arguments,
    add_process_arguments,
    build_copy_server,
    configure_logging,
    require_ready,
    run_copy,
)
from outcrop.engine.runtime import WorkerStatus
from outcrop.errors import (
    InternalError,
    InvalidRequestError,
    OutcropError,
    ServiceUnavailableError,
    WrongModelKindError,
    openai_error_body,
    retry_after_headers,
)

log = logging.getLogger("outcrop.engine.embedding_worker")

# Why 128 on CPU: inputs gathered into one batch are sorted by length before they are cut into
# forwards (of --max-batch-tokens), so a larger batch pads less; 128 short texts are still well
# under a second of CPU. 256 on CUDA keeps a GPU busy.
DEFAULT_MAX_BATCH = 128
DEFAULT_CUDA_MAX_BATCH = 256
# Why 65,536: inputs that may wait for a forward; beyond that the copy answers 503 (shed load
# rather than hold requests past their deadline).
DEFAULT_MAX_QUEUED_INPUTS = 65_536
# Why gather to the last batch's size: when a batch's answers go out, its callers send their next
# requests over the following milliseconds (through the gateway, one after another); taking the
# first of them alone would split one full batch into a tiny one and a late one. So the batcher
# waits until as many inputs are queued as the last batch held (a lone caller: 1, no wait), for at
# most max(50 ms, 20 % of the last batch's forward time): waiting never costs more than a fifth
# of a batch, and load that falls away is noticed within one batch.
DEFAULT_BATCH_MAX_WAIT_SECONDS = 0.05
BATCH_WAIT_SHARE = 0.2
BATCH_WAIT_CAP_SECONDS = 0.5
# Why 30 s: an embedding forward takes well under a second; in-flight requests finish fast.
DEFAULT_DRAIN_SECONDS = 30.0


class EmbeddingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("outcrop_embedding_requests", "Embedding requests answered.", registry=r)
        self.inputs = Counter("outcrop_embedding_inputs", "Inputs embedded.", registry=r)
        self.prompt_tokens = Counter("outcrop_engine_prompt_tokens", "Input tokens encoded.", registry=r)
        self.waiting = Gauge("outcrop_engine_requests_waiting", "Inputs queued for a forward.", registry=r)
        self.batch_inputs = Histogram(
            "outcrop_embedding_batch_inputs",
            "Inputs per batch (one batch = the forwards of what had arrived).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "outcrop_embedding_batch_seconds",
            "Seconds per batch (tokenize + forwards + pooling).",
            registry=r,
        )


@dataclass(eq=False)
class _Job:
    inputs: list[str | list[int]]
    future: asyncio.Future[tuple[Any, list[int]]]
    priority: int = 0
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers what arrived, runs one batch at a time off the event loop, answers each job its slice."""

    def __init__(
        self,
        model: EmbeddingModel,
        metrics: EmbeddingMetrics,
        *,
        max_batch: int,
        max_queued: int,
        max_wait_seconds: float = DEFAULT_BATCH_MAX_WAIT_SECONDS,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.max_wait_seconds = max_wait_seconds
        self._last_inputs = 1  # inputs in the last batch: what to gather before the next
        self._last_seconds = 0.0  # how long the last batch took
        self._jobs: list[_Job] = []
        self._queued_inputs = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.in_flight = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="embedding-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def waiting(self) -> int:
        return self._queued_inputs

    async def embed(self, inputs: list[str | list[int]], priority: int = 0) -> tuple[Any, list[int]]:
        if self._queued_inputs + len(inputs) > self.max_queued:
            raise ServiceUnavailableError(
                f"This embedding copy has {self._queued_inputs} inputs waiting (limit {self.max_queued}); "
                "retry shortly.",
                retry_after_seconds=1.0,
            )
        job = _Job(inputs, asyncio.get_running_loop().create_future(), priority)
        self._jobs.append(job)
        self._queued_inputs += len(inputs)
        self.metrics.waiting.set(self._queued_inputs)
        self._wake.set()
        return await job.future

    def _take(self) -> list[_Job]:
        """The jobs of the next batch: the most urgent priority first, then by arrival, up to max_batch
        inputs (a job larger than that goes alone)."""
        self._jobs.sort(key=lambda j: (j.priority, j.arrived))
        taken: list[_Job] = []
        count = 0
        while self._jobs and (not taken or count + len(self._jobs[0].inputs) <= self.max_batch):
            job = self._jobs.pop(0)
            self._queued_inputs -= len(job.inputs)
            if job.future.done():  # the caller went away
                continue
            taken.append(job)
            count += len(job.inputs)
        self.metrics.waiting.set(self._queued_inputs)
        return taken

    async def _gather(self) -> None:
        """Wait until as many inputs are queued as the last batch held, or the wait's cap."""
        if self.max_wait_seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        cap = min(max(self.max_wait_seconds, BATCH_WAIT_SHARE * self._last_seconds), BATCH_WAIT_CAP_SECONDS)
        give_up = loop.time() + cap
        target = min(self.max_batch, self._last_inputs)
        while self._queued_inputs < target:
            remaining = give_up - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    async def _run(self) -> None:
        while True:
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
            await self._gather()
            jobs = self._take()
            if not jobs:
                continue
            inputs = [x for job in jobs for x in job.inputs]
            started = time.perf_counter()
            try:
                vectors, counts = await asyncio.to_thread(self.model.embed, inputs)
            except Exception as exc:  # answer every waiting caller, keep serving
                log.exception("embedding batch failed")
                error = InternalError(
                    f"The embedding forward failed ({type(exc).__name__}); see the copy's log."
                )
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self._last_inputs, self._last_seconds = len(inputs), time.perf_counter() - started
            self.metrics.batch_inputs.observe(len(inputs))
            self.metrics.batch_seconds.observe(self._last_seconds)
            start = 0
            for job in jobs:
                end = start + len(job.inputs)
                if not job.future.done():
                    job.future.set_result((vectors[start:end], counts[start:end]))
                start = end


class EmbeddingRuntime:
    """The copy's state: options, the loaded model, the batcher, the status /health reports."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model_id = args.served_name or Path(args.model_dir).name
        self.status = WorkerStatus.LOADING
        self.failure: str | None = None
        self.model: EmbeddingModel | None = None
        self.batcher: Batcher | None = None
        self.metrics = EmbeddingMetrics()
        device = str(args.device)
        self.max_batch = args.max_batch or (
            DEFAULT_CUDA_MAX_BATCH if device.startswith("cuda") else DEFAULT_MAX_BATCH
        )

    def load(self) -> None:
        self.model = EmbeddingModel(
            Path(self.args.model_dir),
            device=self.args.device,
            dtype=self.args.dtype,
            threads=self.args.threads,
            max_batch_tokens=self.args.max_batch_tokens,
        )
        self.model.embed(["warm up"])  # the first forward allocates; do it before reporting ready

    def start(self) -> None:
        assert self.model is not None
        self.batcher = Batcher(
            self.model,
            self.metrics,
            max_batch=self.max_batch,
            max_queued=self.args.max_queued_inputs,
            max_wait_seconds=self.args.batch_wait_ms / 1000,
        )
        self.batcher.start()
        self.status = WorkerStatus.READY


def error_response(exc: OutcropError) -> JSONResponse:
    return JSONResponse(
        openai_error_body(exc), status_code=exc.openai_status, headers=retry_after_headers(exc)
    )


def _encode(vectors: Any, fmt: str) -> list[Any]:
    """[n, dim] float32 -> floats or base64 of little-endian float32 (what OpenAI's SDK decodes)."""
    if fmt == "base64":
        raw = vectors.contiguous().numpy().astype("<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in raw]
    return vectors.tolist()  # type: ignore[no-any-return]


def shape_vectors(
    vectors: Any, dimensions: int | None, normalize: bool | None, model_normalizes: bool
) -> Any:
    """Truncate to ``dimensions`` (Matryoshka) and L2-normalize when asked or when the model normalizes."""
    import torch

    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    if normalize or (normalize is None and model_normalizes and dimensions is not None):
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
    return vectors


def create_app(runtime: EmbeddingRuntime, lifespan: Any = None) -> FastAPI:
    app = FastAPI(title="Outcrop embedding copy", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(OutcropError)
    async def _outcrop_error(_: Request, exc: OutcropError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        kind = first.get("type", "")
        if kind == "json_invalid":
            message = "The request body is not valid JSON; send a JSON object."
        elif kind == "extra_forbidden":
            message = f"Unknown field '{loc}': remove it (this server follows the OpenAI embeddings schema)."
        elif kind == "missing":
            message = f"Field '{loc}' is required."
        else:
            message = f"Invalid value for '{loc}': {first.get('msg')}."
        return error_response(InvalidRequestError(message, param=(loc or "").split(".")[0] or None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")
        return error_response(
            InternalError(f"The embedding copy failed unexpectedly ({type(exc).__name__}).")
        )

    def ready() -> EmbeddingRuntime:
        require_ready(runtime.status, runtime.model_id)
        return runtime

    @app.get("/health")
    async def health() -> JSONResponse:
        body = EmbeddingHealth(status=runtime.status.value, model=runtime.model_id, detail=runtime.failure)
        model = runtime.model
        if model is not None:
            body.device = str(model.device)
            body.dtype = str(model.dtype).removeprefix("torch.")
            body.dimension = model.dimension
            body.pooling = model.spec.mode
            body.max_seq_length = model.max_seq_length
            body.max_batch = runtime.max_batch
            body.waiting = runtime.batcher.waiting if runtime.batcher else 0
        status = 200 if runtime.status is WorkerStatus.READY else 503
        return JSONResponse(body.model_dump(exclude_none=True), status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        rt = ready()
        assert rt.model is not None
        card = {
            "id": rt.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "outcrop",
            "max_model_len": rt.model.max_seq_length,
        }
        return JSONResponse({"object": "list", "data": [card]})

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> JSONResponse:
        rt = ready()
        model, batcher = rt.model, rt.batcher
        assert model is not None and batcher is not None
        inputs = body.inputs()
        try:
            check_inputs(inputs)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="input") from None
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                model.check_token_ids(item, f"input[{i}]")
        if body.dimensions is not None and body.dimensions > model.dimension:
            raise InvalidRequestError(
                f"'dimensions' is {body.dimensions}, but this model's vectors have {model.dimension}; "
                f"ask for {model.dimension} or fewer.",
                param="dimensions",
            )
        vectors, counts = await batcher.embed(inputs, body.priority)
        vectors = shape_vectors(vectors, body.dimensions, body.normalize, model.spec.normalize)
        tokens = sum(counts)
        rt.metrics.requests.inc()
        rt.metrics.inputs.inc(len(inputs))
        rt.metrics.prompt_tokens.inc(tokens)
        data = [
            {"object": "embedding", "index": i, "embedding": v}
            for i, v in enumerate(_encode(vectors, body.encoding_format))
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.model or rt.model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def refuse_generation(request: Request) -> JSONResponse:
        what = "chat completions" if request.url.path.endswith("chat/completions") else "text completions"
        return error_response(WrongModelKindError(runtime.model_id, "embedding", what))

    app.add_api_route("/v1/completions", refuse_generation, methods=["POST"])
    app.add_api_route("/v1/chat/completions", refuse_generation, methods=["POST"])
    return app


# ------------------------------------------------------------------ process


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m outcrop.engine.embedding_worker",
        description="Serve one sentence-embedding model folder over OpenAI's /v1/embeddings (a model copy).",
        epilog="example: python -m outcrop.engine.embedding_worker --model-dir ./tiny-bert --port 8001",
    )
    add_model_arguments(
        p,
        model_help="sentence-transformers safetensors folder.",
        max_batch_help=f"Inputs per batch at most (default: {DEFAULT_MAX_BATCH} on CPU, "
        f"{DEFAULT_CUDA_MAX_BATCH} on CUDA).",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=DEFAULT_MAX_BATCH_TOKENS,
        help=f"Padded tokens per forward at most (default: {DEFAULT_MAX_BATCH_TOKENS}).",
    )
    p.add_argument(
        "--max-queued-inputs",
        type=int,
        default=DEFAULT_MAX_QUEUED_INPUTS,
        help="Inputs that may wait for a forward; beyond that requests get 503 + Retry-After.",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=DEFAULT_BATCH_MAX_WAIT_SECONDS * 1000,
        help="Longest wait for a batch to fill to the last batch's size (raised to a fifth of the last "
        "batch's time; 0 = take what is there).",
    )
    add_process_arguments(p, drain_seconds=DEFAULT_DRAIN_SECONDS)
    args = p.parse_args(argv)
    for name in ("max_batch", "max_batch_tokens", "max_queued_inputs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def build_server(args: argparse.Namespace) -> tuple[DrainingServer, EmbeddingRuntime]:
    runtime = EmbeddingRuntime(args)

    async def stop() -> None:
        if runtime.batcher is not None:
            await runtime.batcher.stop()

    server = build_copy_server(
        args,
        runtime,
        lambda lifespan: create_app(runtime, lifespan),
        start=lambda _loop: runtime.start(),
        stop=stop,
    )
    return server, runtime


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    server, _ = build_server(args)
    return run_copy(server)


if __name__ == "__main__":
    sys.exit(main())
