"""Engine v2 (issue 12): the copy before and after, side by side in one run.

    .venv/bin/python benchmarks/engine_v2.py                      # before = main's merge base
    .venv/bin/python benchmarks/engine_v2.py --base 6bb6287 --new-tokens 64

"Before" is the ``outcrop`` package of ``--base`` (exported with ``git archive`` into a
temporary folder), "after" is this checkout; both run as real ``python -m
outcrop.engine.worker`` processes on loopback, one at a time, same models, same load,
interleaved config by config so that machine load drifts alike. Measured:

1. overhead share: the worker's time per generated token (1 / tok/s at concurrency 1; batch
   / aggregate tok/s at 32) next to the model's own forward for that batch shape (this
   checkout's ``ModelRunner.forward``, a decode step at the same context length, timed in
   this process while no worker runs), for the 27M model in float32 and bfloat16,
   streaming and not; and, for "after", the share from the worker's own
   ``outcrop_engine_forward_seconds`` counter over the same load's wall time (same process,
   same contention, so it survives a busy machine better);
2. streams do not slow each other: per-stream tok/s at concurrency 16 / concurrency 1, tiny
   and 27M models; the tiny model's aggregate streaming tok/s at concurrency 64, after/before;
3. prefix caching: time to first token of a request whose 1,024-token prefix is cached vs
   the same request cold (a prefix never seen), greedy outputs compared;
4. memory: concurrent 512-token requests that fit a 1 GiB KV budget with --max-model-len
   8192, from each worker's /health (before: its slots; after: its blocks / 32).

Prints a Markdown report for benchmarks/RESULTS.md. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.engine_throughput import MODEL_SHAPES, free_port, stop, wait_healthy  # noqa: E402

PROMPT = "Request {i}: The quick brown fox jumps over the lazy dog, and then"


@dataclass
class Load:
    aggregate: float  # tokens/s over the whole run
    per_stream: float  # mean over requests of tokens / (last token - send)
    ttft: float  # median seconds to the first token (streaming) or to the answer
    wall: float = 0.0  # seconds the whole load took
    tokens: int = 0
    worker_cpu: float = 0.0  # CPU seconds of the worker's processes (API + core) during the load
    client_cpu: float = 0.0  # CPU seconds of this process (the clients) during the load


class Worker:
    def __init__(self, code: Path, model_dir: Path, name: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
        env["PYTHONPATH"] = str(code)
        self.log = Path(tempfile.gettempdir()) / f"engine-v2-{name}-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "outcrop.engine.worker",
            "--model-dir",
            str(model_dir),
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(
            [*cmd, *extra], env=env, cwd=str(code), stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        wait_healthy(self.url, self.proc)

    def metric(self, name: str) -> float:
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return float("nan")  # the before side has no such metric

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def close(self) -> None:
        stop(self.proc)


async def _load(url: str, conc: int, per_client: int, new_tokens: int, stream: bool) -> Load:
    per_stream: list[float] = []
    ttfts: list[float] = []
    total = 0

    async def one(i: int, http: httpx.AsyncClient) -> None:
        nonlocal total
        for r in range(per_client):
            body = {
                "model": "m",
                "prompt": PROMPT.format(i=i * 100 + r),
                "max_tokens": new_tokens,
                "temperature": 0,
                "ignore_eos": True,
                "stream": stream,
            }
            start = time.perf_counter()
            first = None
            tokens = 0
            if stream:
                async with http.stream("POST", f"{url}/v1/completions", json=body) as resp:
                    resp.raise_for_status()
                    async for line in resp.aiter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            first = first or time.perf_counter()
                tokens = new_tokens
            else:
                resp = await http.post(f"{url}/v1/completions", json=body)
                resp.raise_for_status()
                tokens = resp.json()["usage"]["completion_tokens"]
                first = time.perf_counter()
            end = time.perf_counter()
            ttfts.append((first or end) - start)
            per_stream.append(tokens / (end - start))
            total += tokens

    limits = httpx.Limits(max_connections=conc + 4, max_keepalive_connections=conc + 4)
    async with httpx.AsyncClient(timeout=900, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, http) for i in range(conc)))
        wall = time.perf_counter() - start
    return Load(total / wall, statistics.mean(per_stream), statistics.median(ttfts), wall, total)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the worker's API and core)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def warm_up(worker: Worker, stream: bool) -> None:
    asyncio.run(_load(worker.url, 2, 1, 4, stream))


def load(worker: Worker, conc: int, new_tokens: int, stream: bool, warm: bool = True) -> Load:
    per_client = 2 if conc == 1 else 1
    if warm:
        warm_up(worker, stream)
    worker_before, client_before = tree_cpu_seconds(worker.proc.pid), time.process_time()
    result = asyncio.run(_load(worker.url, conc, per_client, new_tokens, stream))
    result.worker_cpu = tree_cpu_seconds(worker.proc.pid) - worker_before
    result.client_cpu = time.process_time() - client_before
    return result


def cpu_bound(one: Load, sixteen: Load, cores: int) -> str:
    """What the machine's cores allow at concurrency 16: every generated token costs the
    worker's and the clients' CPU; ``cores / (that per token)`` caps the aggregate rate, and a
    sixteenth of it caps one stream's (vs the lone stream's rate)."""
    worker_us = sixteen.worker_cpu / max(sixteen.tokens, 1) * 1e6
    client_us = sixteen.client_cpu / max(sixteen.tokens, 1) * 1e6
    cap_per_stream = cores / ((worker_us + client_us) / 1e6) / 16
    return (
        f"CPU per token at conc 16: worker {worker_us:.0f} us + clients {client_us:.0f} us; "
        f"{cores} cores cap one of 16 streams at {cap_per_stream:.0f} tok/s = "
        f"{cap_per_stream / one.per_stream:.2f}x the lone stream"
    )


def forward_seconds(model_dir: Path, dtype: str, batch: int, context: int) -> float:
    """This checkout's decode forward for ``batch`` rows at ``context`` tokens, in this process."""
    import torch

    from outcrop.engine.kv_cache import KVCache, kv_bytes_per_token, plan_kv_cache
    from outcrop.engine.model_runner import ModelRunner, StepBatch, resolve_dtype

    dev = torch.device("cpu")
    dt = resolve_dtype(dtype, dev)
    runner = ModelRunner.load(model_dir, dev, dt)
    per_token = kv_bytes_per_token(runner.num_layers, runner.num_kv_heads, runner.head_dim, dt)
    blocks = batch * (context // 16 + 2)
    plan = plan_kv_cache((blocks + 1) * 16 * per_token, per_token, 2048)
    runner.attach_cache(KVCache(plan, runner.num_layers, runner.num_kv_heads, runner.head_dim, dt, dev))
    per_row = context // 16 + 1
    tables = [list(range(r * per_row, (r + 1) * per_row)) for r in range(batch)]
    step = StepBatch([[5]] * batch, tables, [context] * batch)
    for _ in range(3):
        runner.forward(step)
    times = []
    for _ in range(10):
        t = time.perf_counter()
        runner.forward(step)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ttft(url: str, prompt_ids: list[int]) -> tuple[float, str]:
    body = {"model": "m", "prompt": prompt_ids, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    start = time.perf_counter()
    first = None
    text = ""
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                first = first or time.perf_counter()
                import json

                text += json.loads(line[6:])["choices"][0]["text"]
    return (first or time.perf_counter()) - start, text


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="main", help="git revision measured as 'before' (default: main)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per worker and for the forward timing (default 1: on a shared, loaded CPU "
        "more threads spin against each other)",
    )
    p.add_argument("--dtypes", default="float32,bfloat16", help="dtypes of the overhead section")
    p.add_argument(
        "--skip", default="", help="comma list of sections to skip: overhead,streams,prefix,memory"
    )
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    from outcrop.testing.tiny_models import build_tiny_model

    base = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", args.base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="engine-v2-"))
    before_code = root / "before"
    before_code.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", base, "outcrop"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(before_code)], input=archive.stdout, check=True)
    codes = {"before": before_code, "after": REPO_ROOT}
    models = {
        "tiny": build_tiny_model(root / "tiny", **MODEL_SHAPES["tiny"]),  # type: ignore[arg-type]
        "27M": build_tiny_model(root / "bench", **MODEL_SHAPES["bench"]),  # type: ignore[arg-type]
    }
    n = args.new_tokens
    out: list[str] = [
        f"command: `python benchmarks/engine_v2.py --base {args.base} --new-tokens {n} --threads {args.threads} "
        f"--dtypes {args.dtypes}`; before = {base}, "
        f"after = {head} (+ working tree); {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average at start {loadavg()}",
        "",
    ]
    common = [
        "--max-model-len", "2048", "--kv-cache-bytes", str(512 * 2**20), "--max-batch", "64",
        "--threads", str(args.threads),
    ]  # fmt: skip
    import torch

    torch.set_num_threads(args.threads)

    if "overhead" not in skip:
        out += [
            "**Overhead share** (27M model; forward = this checkout's decode forward at that batch, in-process)",
            "",
            "| dtype | conc | stream | forward ms/step | before ms/token-step | before share | after ms/token-step "
            "| after share | after share, in-worker forward |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for dtype in args.dtypes.split(","):
            fwd = {c: forward_seconds(models["27M"], dtype, c, 16 + n // 2) for c in (1, 32)}
            results: dict[tuple[str, int, bool], float] = {}
            in_worker: dict[tuple[str, int, bool], float] = {}
            for side in ("before", "after"):
                w = Worker(codes[side], models["27M"], side, *common, "--dtype", dtype)
                try:
                    for conc in (1, 32):
                        for stream in (True, False):
                            warm_up(w, stream)  # before the counter is read: only the load counts
                            fwd_before = w.metric("outcrop_engine_forward_seconds_total")
                            lo = load(w, conc, n, stream, warm=False)
                            in_worker[(side, conc, stream)] = (
                                w.metric("outcrop_engine_forward_seconds_total") - fwd_before
                            ) / lo.wall
                            # seconds per step of `conc` tokens
                            results[(side, conc, stream)] = conc / lo.aggregate
                            print(
                                f"  {dtype} {side} conc {conc} stream {stream}: {lo}",
                                file=sys.stderr,
                                flush=True,
                            )
                finally:
                    w.close()
            for conc in (1, 32):
                for stream in (True, False):
                    b, a = results[("before", conc, stream)], results[("after", conc, stream)]
                    out.append(
                        f"| {dtype} | {conc} | {'yes' if stream else 'no'} | {fwd[conc] * 1e3:.1f} | {b * 1e3:.1f} | "
                        f"{fwd[conc] / b:.0%} | {a * 1e3:.1f} | {fwd[conc] / a:.0%} | "
                        f"{in_worker[('after', conc, stream)]:.0%} |"
                    )
        out.append("")
        print("\n".join(out), file=sys.stderr, flush=True)

    if "streams" not in skip:
        out += [
            "**Streams do not slow each other** (float32, streaming)",
            "",
            "| model | side | conc 1 tok/s/stream | conc 16 tok/s/stream | ratio | conc 64 aggregate tok/s |",
            "|---|---|---|---|---|---|",
        ]
        agg: dict[str, float] = {}
        bounds: list[str] = []
        for model in ("tiny", "27M"):
            for side in ("before", "after"):
                w = Worker(codes[side], models[model], side, *common)
                try:
                    one = load(w, 1, n, True)
                    sixteen = load(w, 16, n, True)
                    sixty_four = load(w, 64, n, True) if model == "tiny" else None
                    print(f"  {model} {side}: {one} {sixteen} {sixty_four}", file=sys.stderr, flush=True)
                finally:
                    w.close()
                if sixty_four is not None:
                    agg[side] = sixty_four.aggregate
                bounds.append(f"- {model} {side}: {cpu_bound(one, sixteen, os.cpu_count() or 1)}")
                out.append(
                    f"| {model} | {side} | {one.per_stream:.0f} | {sixteen.per_stream:.0f} | "
                    f"{sixteen.per_stream / one.per_stream:.2f} | "
                    f"{f'{sixty_four.aggregate:.0f}' if sixty_four else '-'} |"
                )
        out += [
            "",
            f"tiny model, conc 64 aggregate streaming tok/s after/before: {agg['after'] / agg['before']:.2f}x",
            "",
            *bounds,
            "",
        ]
        print("\n".join(out[-16:]), file=sys.stderr, flush=True)

    if "prefix" not in skip:
        import random

        rng = random.Random(0)
        w = Worker(codes["after"], models["27M"], "after", *common)
        try:
            ttft(w.url, [5] * 20)  # warm-up
            rows = []
            for trial in range(3):
                prefix = [rng.randrange(3, 2000) for _ in range(1024)]
                prompt = [*prefix, 7, 8, 9 + trial]
                cold, cold_text = ttft(w.url, prompt)
                warm, warm_text = ttft(w.url, [*prefix, 7, 8, 9 + trial])
                rows.append((cold, warm, cold_text == warm_text))
        finally:
            w.close()
        cold_m = statistics.median(r[0] for r in rows)
        warm_m = statistics.median(r[1] for r in rows)
        out += [
            "**Prefix caching** (27M float32, 1,024-token prefix + 3 tokens, after only)",
            "",
            f"TTFT cold {cold_m * 1e3:.0f} ms, cached {warm_m * 1e3:.0f} ms: {cold_m / warm_m:.1f}x faster; "
            f"greedy outputs identical in {sum(r[2] for r in rows)}/{len(rows)} trials",
            "",
        ]
        print("\n".join(out[-4:]), file=sys.stderr, flush=True)

    if "memory" not in skip:
        long_model = build_tiny_model(
            root / "bench-8k",
            **{**MODEL_SHAPES["bench"], "max_position_embeddings": 8192},  # type: ignore[arg-type]
        )
        fits = {}
        for side in ("before", "after"):
            w = Worker(
                codes[side],
                long_model,
                side,
                "--max-model-len",
                "8192",
                "--kv-cache-bytes",
                str(2**30),
                "--max-batch",
                "4096",
                "--threads",
                str(args.threads),
            )
            try:
                h = w.health()
            finally:
                w.close()
            fits[side] = (
                h["max_batch"] if side == "before" else min(h["max_batch"], h["kv_cache_blocks"] // 32)
            )
        out += [
            "**Memory** (27M float32, --max-model-len 8192, 1 GiB KV budget): concurrent 512-token requests that fit: "
            f"before {fits['before']}, after {fits['after']} ({fits['after'] / max(1, fits['before']):.0f}x)",
            "",
            f"load average at end {loadavg()}",
        ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
