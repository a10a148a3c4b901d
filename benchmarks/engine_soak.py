"""Engine v2 block-leak soak (issue 12): minutes of mixed load on one copy, then every block free.

    .venv/bin/python benchmarks/engine_soak.py                  # 10 minutes, tiny model
    .venv/bin/python benchmarks/engine_soak.py --minutes 1 --clients 8

One real ``python -m outcrop.engine.worker`` on loopback with a KV budget small enough that
the scheduler must preempt, driven by clients that each loop over a mix of what real callers
do: streams read to the end, streams dropped after a few tokens (client disconnect),
non-streaming requests dropped before the answer, stop strings, ``n`` > 1, chat, batch
priority, and prompts sharing a long prefix (prefix-cache hits and evictions). Every few
seconds it samples ``/health``; at the end, once the load has drained, the copy must be back
where it started: no running or waiting sequence and every KV block free (cached-but-free
prefix blocks count as free). Exit status 1 on a leak, a 5xx, or a copy that went unhealthy.
Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.engine_v2 import Worker, loadavg  # noqa: E402

PREFIX = "You are a careful assistant for a shipping company. Answer briefly and politely. " * 6
KINDS = ("stream", "drop-stream", "drop-wait", "stop", "n2", "chat", "batch", "prefix")


def _body(kind: str, i: int, rng: random.Random) -> tuple[str, dict]:
    tokens = rng.choice((8, 24, 64, 120))
    base = {"model": "m", "max_tokens": tokens, "temperature": rng.choice((0, 0.8)), "ignore_eos": True}
    prompt = f"Request {i}: the quick brown fox jumps over the lazy dog"
    if kind == "chat":
        return "/v1/chat/completions", {**base, "messages": [{"role": "user", "content": prompt}]}
    body = {**base, "prompt": PREFIX + prompt if kind == "prefix" else prompt}
    if kind in ("stream", "drop-stream", "prefix"):
        body["stream"] = True
    if kind == "stop":
        body["stop"] = [" the", "fox"]
        body.pop("ignore_eos")
    if kind == "n2":
        body["n"] = 2
    if kind == "batch":
        body["priority"] = 1
    return "/v1/completions", body


async def _client(url: str, seed: int, deadline: float, counts: Counter[str]) -> None:
    rng = random.Random(seed)
    i = 0
    async with httpx.AsyncClient(timeout=120) as http:
        while time.monotonic() < deadline:
            i += 1
            kind = rng.choice(KINDS)
            path, body = _body(kind, seed * 100_000 + i, rng)
            try:
                if kind == "drop-wait":
                    await asyncio.wait_for(http.post(url + path, json=body), timeout=rng.uniform(0.01, 0.3))
                elif body.get("stream"):
                    async with http.stream("POST", url + path, json=body) as resp:
                        counts[f"http {resp.status_code}"] += 1
                        seen = 0
                        async for _ in resp.aiter_lines():
                            seen += 1
                            if kind == "drop-stream" and seen >= rng.randint(1, 6):
                                break  # leave mid-stream: the copy must abort and free the blocks
                    counts[kind] += 1
                    continue
                else:
                    resp = await http.post(url + path, json=body)
                    counts[f"http {resp.status_code}"] += 1
                counts[kind] += 1
            except TimeoutError:
                counts[kind + " (dropped)"] += 1
            except httpx.HTTPError as exc:
                counts[f"client error {type(exc).__name__}"] += 1


async def _watch(worker: Worker, deadline: float, samples: list[dict]) -> None:
    while time.monotonic() < deadline:
        await asyncio.sleep(5)
        samples.append(await asyncio.to_thread(worker.health))


async def _run(worker: Worker, minutes: float, clients: int) -> tuple[Counter[str], list[dict]]:
    counts: Counter[str] = Counter()
    samples: list[dict] = []
    deadline = time.monotonic() + minutes * 60
    await asyncio.gather(
        _watch(worker, deadline, samples), *(_client(worker.url, s, deadline, counts) for s in range(clients))
    )
    return counts, samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--clients", type=int, default=24)
    p.add_argument(
        "--kv-cache-bytes", type=int, default=2**20, help="small (1 MiB), so the scheduler preempts"
    )
    a = p.parse_args()
    from outcrop.testing.tiny_models import build_tiny_model

    model = build_tiny_model(Path(tempfile.mkdtemp(prefix="engine-soak-")) / "tiny")
    print(f"load average before: {loadavg()}; {os.cpu_count()} CPUs; {a.minutes} min, {a.clients} clients")
    worker = Worker(
        REPO_ROOT, model, "soak", "--max-model-len", "512", "--kv-cache-bytes", str(a.kv_cache_bytes)
    )
    try:
        start = worker.health()
        counts, samples = asyncio.run(_run(worker, a.minutes, a.clients))
        drained = time.monotonic() + 30
        end = worker.health()
        while time.monotonic() < drained and (end["running"] or end["waiting"]):
            time.sleep(0.2)
            end = worker.health()
        preemptions = worker.metric("outcrop_engine_preemptions_total")
        hits = worker.metric("outcrop_engine_prefix_cache_hits_total")
    finally:
        worker.close()
    print(f"load average after: {loadavg()}")
    print("requests: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    busiest = min(samples, key=lambda s: s.get("kv_cache_free_blocks", 0)) if samples else {}
    print(
        f"blocks: {start['kv_cache_blocks']} in the pool; fewest free during the run "
        f"{busiest.get('kv_cache_free_blocks')}; free at the end {end['kv_cache_free_blocks']}; "
        f"running/waiting at the end {end['running']}/{end['waiting']}; preemptions {preemptions:.0f}; "
        f"prefix-cache hit tokens {hits:.0f}"
    )
    unhealthy = [s for s in samples if s.get("status") != "ok"]
    server_errors = sum(v for k, v in counts.items() if k.startswith("http 5"))
    leaked = end["kv_cache_blocks"] - end["kv_cache_free_blocks"]
    ok = leaked == 0 and not end["running"] and not end["waiting"] and not unhealthy and not server_errors
    print(
        f"{'PASS' if ok else 'FAIL'}: {leaked} blocks leaked, {server_errors} 5xx, "
        f"{len(unhealthy)} unhealthy samples of {len(samples)}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
