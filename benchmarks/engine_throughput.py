"""Throughput and latency of Outcrop's model copy, side by side with its yardsticks.

    .venv/bin/python benchmarks/engine_throughput.py
    .venv/bin/python benchmarks/engine_throughput.py --dtypes float32 --models bench --concurrency 1,32
    .venv/bin/python benchmarks/engine_throughput.py --soak-seconds 600 --dtypes float32 --models bench

For each generated model (``bench``: Llama shape, hidden 512, 8 layers, ~25M parameters;
``tiny``: ~100K parameters) and dtype, at each concurrency it measures, with the same
prompts and 64 new tokens per request:

1. ceiling: transformers ``model.generate`` in-process on one left-padded batch;
2. worker: ``python -m outcrop.engine.worker`` through ``/v1/completions``, ``conc`` clients
   each sending requests back to back;
3. peer: ``transformers serve --continuous-batching`` on the same folder and load (skipped
   with the reason printed when it cannot run here).

It prints tokens/s and p95 latency of each, the ratios, and the worker's RSS after the
concurrency-32 run. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MODEL_SHAPES = {
    # The locally trained tokenizer stops short of 2048 tokens on its small corpus; the model
    # still gets a 2048-row vocabulary (27M parameters, as in DESIGN.md's yardsticks).
    "bench": dict(
        hidden_size=512,
        intermediate_size=1376,
        num_layers=8,
        num_heads=8,
        num_kv_heads=8,
        vocab_size=2048,
        extra_config={"vocab_size": 2048},
    ),
    "tiny": dict(),
}
PROMPT_TEMPLATES = [
    "Request {i}: The quick brown fox jumps over the lazy dog.",
    "Request {i}: Outcrop imports fine-tuned models and serves them.",
    "Request {i}: Once upon a time there was a little model",
    "Request {i}: def add(a, b):\n    return a + b\n",
]


@dataclass
class Result:
    tokens_per_second: float
    p95_seconds: float
    p50_seconds: float


def prompts(n: int) -> list[str]:
    return [PROMPT_TEMPLATES[i % len(PROMPT_TEMPLATES)].format(i=i) for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------ ceiling


class Ceiling:
    """transformers' generate on one left-padded batch, in this process."""

    def __init__(self, model_dir: Path, dtype: str, new_tokens: int, threads: int | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.new_tokens = new_tokens
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.tok.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).eval()

    def measure(self, conc: int) -> Result:
        enc = self.tok(prompts(conc), return_tensors="pt", padding=True)
        kwargs = dict(max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens, do_sample=False)
        with self.torch.inference_mode():
            start = time.perf_counter()
            out = self.model.generate(**enc, pad_token_id=self.tok.pad_token_id, **kwargs)
            wall = time.perf_counter() - start
        assert out.shape[1] - enc["input_ids"].shape[1] == self.new_tokens
        return Result(conc * self.new_tokens / wall, wall, wall)


# ------------------------------------------------------------------ HTTP load


async def http_load(
    base_url: str, model: str, conc: int, requests_per_client: int, new_tokens: int, extra: dict
) -> Result:
    latencies: list[float] = []
    tokens = 0
    texts = prompts(conc)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for _ in range(requests_per_client):
            body = {"model": model, "prompt": texts[i], "max_tokens": new_tokens, "temperature": 0, **extra}
            start = time.perf_counter()
            r = await http.post(f"{base_url}/v1/completions", json=body)
            latencies.append(time.perf_counter() - start)
            r.raise_for_status()
            tokens += r.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=conc + 4, max_keepalive_connections=conc + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(conc)))
        wall = time.perf_counter() - start
    return Result(tokens / wall, percentile(latencies, 0.95), percentile(latencies, 0.5))


def wait_healthy(base_url: str, proc: subprocess.Popen, timeout_seconds: float = 300) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("did not become healthy")


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            values[key] = int(value.split()[0]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_worker(
    model_dir: Path, dtype: str, max_batch: int, log: Path, threads: int | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "outcrop.engine.worker",
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-batch",
        str(max_batch),
        "--max-model-len",
        "512",
        "--served-name",
        "bench",
        "--log-level",
        "warning",
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def step_counts(base: str) -> dict[str, float]:
    counts = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("outcrop_engine_steps_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            counts[kind] = float(line.rsplit(" ", 1)[1])
    return counts


def best(a: Result | None, b: Result) -> Result:
    return b if a is None or b.tokens_per_second > a.tokens_per_second else a


def run_pair(
    model_dir: Path,
    dtype: str,
    concurrencies: list[int],
    new_tokens: int,
    rpc: int,
    rounds: int,
    soak_seconds: float,
    log: Path,
    threads: int | None,
) -> tuple[dict[int, Result], dict[int, Result], dict[str, int]]:
    """Ceiling and worker measured back to back at each point (best of ``rounds``): this
    machine is shared, so both sides of a ratio should see the same background load."""
    proc, base = start_worker(model_dir, dtype, max(concurrencies), log, threads)
    memory: dict[str, int] = {}
    try:
        ceiling = Ceiling(model_dir, dtype, new_tokens, threads)
        wait_healthy(base, proc)
        extra = {"ignore_eos": True}
        ceiling.measure(4)  # warm-up both
        asyncio.run(http_load(base, "bench", 4, 2, new_tokens, extra))
        ceil_results: dict[int, Result] = {}
        worker_results: dict[int, Result] = {}
        for conc in concurrencies:
            c: Result | None = None
            w: Result | None = None
            steps_before = step_counts(base)
            for _ in range(rounds):
                c = best(c, ceiling.measure(conc))
                w = best(w, asyncio.run(http_load(base, "bench", conc, rpc, new_tokens, extra)))
            assert c is not None and w is not None
            ceil_results[conc], worker_results[conc] = c, w
            steps = {k: v - steps_before.get(k, 0) for k, v in step_counts(base).items()}
            print(
                f"  conc {conc}: ceiling {c.tokens_per_second:.0f} tok/s, worker {w.tokens_per_second:.0f} tok/s; "
                "worker steps " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(steps.items()))
            )
            if conc == max(concurrencies):
                memory["rss_after_max_conc"], memory["hwm_after_max_conc"] = rss_bytes(proc.pid)
        del ceiling
        gc.collect()
        if soak_seconds > 0:
            memory.update(soak(base, proc.pid, max(concurrencies), new_tokens, soak_seconds))
        return ceil_results, worker_results, memory
    finally:
        stop(proc)


def soak(base: str, pid: int, conc: int, new_tokens: int, seconds: float) -> dict[str, int]:
    """Steady load for ``seconds``; RSS sampled at the start and the end."""
    start_rss = rss_bytes(pid)[0]
    deadline = time.monotonic() + seconds
    samples = [start_rss]
    while time.monotonic() < deadline:
        asyncio.run(http_load(base, "bench", conc, 1, new_tokens, {"ignore_eos": True}))
        samples.append(rss_bytes(pid)[0])
    print(
        f"  soak {seconds:.0f}s at conc {conc}: RSS MiB "
        + " ".join(f"{s / 2**20:.0f}" for s in samples[:: max(1, len(samples) // 10)])
    )
    return {"soak_rss_start": start_rss, "soak_rss_end": samples[-1], "soak_rss_max": max(samples)}


def run_peer(
    model_dir: Path, dtype: str, concurrencies: list[int], new_tokens: int, rpc: int, log: Path
) -> tuple[dict[int, Result], str | None]:
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        return {}, "the `transformers` CLI is not installed"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        str(exe),
        "serve",
        "--continuous-batching",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        dtype,
        str(model_dir),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_healthy(base, proc, 120)
            probe = httpx.post(
                f"{base}/v1/completions",
                timeout=120,
                json={"model": str(model_dir), "prompt": "Hello", "max_tokens": 4},
            )
            probe.raise_for_status()
        except (RuntimeError, httpx.HTTPError) as exc:
            stop(proc)
            errors = [ln for ln in log.read_text().splitlines() if "Error" in ln]
            return {}, (errors[-1].strip() if errors else str(exc))[:300]
        results = {}
        for conc in concurrencies:
            results[conc] = asyncio.run(http_load(base, str(model_dir), conc, rpc, new_tokens, {}))
        return results, None
    finally:
        stop(proc)


# ------------------------------------------------------------------ report


def fmt(r: Result | None) -> str:
    return f"{r.tokens_per_second:7.0f} {r.p95_seconds:6.2f}s" if r else f"{'-':>7} {'-':>7}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="bench,tiny", help="Comma list of: bench, tiny.")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--concurrency", default="1,4,16,32")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--requests-per-client", type=int, default=3, help="Back-to-back requests per client.")
    p.add_argument("--rounds", type=int, default=2, help="Ceiling/worker measurements per point (best kept).")
    p.add_argument("--soak-seconds", type=float, default=0, help="Steady max-concurrency load afterwards.")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads for ceiling and worker (default: torch's)."
    )
    p.add_argument(
        "--work-dir", type=Path, default=None, help="Where models are built (default: a temp dir)."
    )
    args = p.parse_args()
    # A SIGTERM (e.g. from `timeout`) unwinds through the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="outcrop-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    from outcrop.testing.tiny_models import build_tiny_model

    print(
        f"# engine_throughput: {args.new_tokens} new tokens/request, {os.cpu_count()} CPUs, work dir {work}"
    )
    for name in args.models.split(","):
        model_dir = work / name
        if not (model_dir / "config.json").exists():
            build_tiny_model(model_dir, family="llama", **MODEL_SHAPES[name])
        for dtype in args.dtypes.split(","):
            ceiling, worker, memory = run_pair(
                model_dir,
                dtype,
                concurrencies,
                args.new_tokens,
                args.requests_per_client,
                args.rounds,
                args.soak_seconds,
                work / f"worker-{name}-{dtype}.log",
                args.threads,
            )
            peer, why_not = (
                ({}, "skipped (--skip-peer)")
                if args.skip_peer
                else run_peer(
                    model_dir,
                    dtype,
                    concurrencies,
                    args.new_tokens,
                    args.requests_per_client,
                    work / f"peer-{name}-{dtype}.log",
                )
            )
            print(f"\n## model {name} ({dtype})")
            print(
                f"{'conc':>4} | {'ceiling tok/s p95':>17} | {'worker tok/s p95':>17} | {'peer tok/s p95':>17} | "
                f"{'w/ceil':>6} | {'w/peer':>6} | {'lat1 ratio':>10}"
            )
            for conc in concurrencies:
                c, w, pr = ceiling.get(conc), worker.get(conc), peer.get(conc)
                ratio_c = f"{w.tokens_per_second / c.tokens_per_second:6.2f}" if w and c else f"{'-':>6}"
                ratio_p = f"{w.tokens_per_second / pr.tokens_per_second:6.2f}" if w and pr else f"{'-':>6}"
                lat = f"{w.p50_seconds / c.p50_seconds:10.2f}" if w and c and conc == 1 else f"{'':>10}"
                print(f"{conc:>4} | {fmt(c)} | {fmt(w)} | {fmt(pr)} | {ratio_c} | {ratio_p} | {lat}")
            if why_not:
                print(f"peer not measured: {why_not}")
            for key, value in memory.items():
                print(f"worker {key}: {value / 2**20:.0f} MiB")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
