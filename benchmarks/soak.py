"""Soak: mixed load with disconnects, hostile bodies and a copy kill against a real ``outcrop serve``.

    .venv/bin/python benchmarks/soak.py                  # 30 minutes (the hardening issue's run)
    .venv/bin/python benchmarks/soak.py --minutes 2      # a quick look

It starts ``outcrop serve`` on loopback with authentication on and two warm copies of a tiny
generated model (Outcrop's own torch worker, the ``local`` launcher), then for the whole run
keeps these clients busy at once:

- good requests, OpenAI ``/v1/completions`` and ``/v1/chat/completions`` (streamed and not)
  and Bedrock ``InvokeModel`` / ``Converse``, each checked for a well-formed answer;
- clients that hang up: a stream dropped after its first event, a request abandoned mid-flight;
- hostile or careless bodies: JSON nested 50k deep, a 5,000-digit integer, a seed of 2**80,
  wrong Converse ``inferenceConfig`` types, a lone surrogate, broken JSON, unknown fields,
  a wrong key; each must answer 4xx;
- one ``kill -9`` of a copy half-way through (the gateway must replace it while the other copy
  serves);
- a batch job of ``--batch-records`` records submitted at the start, whose output must hold
  every record exactly once.

Every ``--sample-seconds`` it samples the gateway's RSS and open file descriptors and the
copies' RSS. At the end it prints the samples, the counts per kind, the 5xx count and the
lost requests (a good request with no answer at all: time-out or a dropped connection) and
exits non-zero when a goal is missed: 0 5xx, 0 lost, every batch record once, and flat memory
and descriptors (the last quarter's median within ``--flat-tolerance`` of the second quarter's).
A 429/502/503 on a good request is counted apart (``retryable``): it is what a client's retry
handles (a copy kill may cause a few); on a hostile body any 5xx counts as a server error. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.gateway_overhead import free_port, gateway_log, wait_healthy  # noqa: E402
from benchmarks.serving_throughput import _env, machine, stop  # noqa: E402

MODEL = "soak-llama"
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "SOAKKEY", "soak-secret"
API_KEY = "soak-api-key-0123456789"


@dataclass
class Tally:
    """What the clients saw, by kind of request."""

    sent: Counter[str] = field(default_factory=Counter)
    ok: Counter[str] = field(default_factory=Counter)
    client_errors: Counter[str] = field(default_factory=Counter)  # 4xx, expected for hostile bodies
    server_errors: Counter[str] = field(default_factory=Counter)  # 5xx that no retry explains
    retryable: Counter[str] = field(default_factory=Counter)  # 502/503/429 with a retryable name
    lost: Counter[str] = field(default_factory=Counter)  # no answer at all
    wrong: Counter[str] = field(default_factory=Counter)  # an answer of the wrong status or shape
    examples: dict[str, str] = field(default_factory=dict)

    def note(self, kind: str, what: str, detail: str) -> None:
        self.examples.setdefault(f"{kind}:{what}", detail[:300])


def _headers() -> dict[str, str]:
    return {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}


GOOD: list[tuple[str, str, dict[str, Any] | None, bool]] = [
    (
        "openai-completion",
        "/v1/completions",
        {"model": MODEL, "prompt": "Hello there", "max_tokens": 8},
        False,
    ),
    (
        "openai-chat-stream",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True},
        True,
    ),
    ("bedrock-invoke", f"/model/{MODEL}/invoke", {"prompt": "Tell me", "max_gen_len": 8}, False),
    (
        "bedrock-converse",
        f"/model/{MODEL}/converse",
        {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 8}},
        False,
    ),
]


def _deep(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"


HOSTILE: list[tuple[str, str, bytes, dict[str, str] | None]] = [
    ("deep-json", "/v1/completions", _deep(50_000), None),
    (
        "huge-int",
        "/v1/completions",
        b'{"model": "' + MODEL.encode() + b'", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}",
        None,
    ),
    (
        "seed-2**80",
        "/v1/completions",
        json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 4, "seed": 2**80}).encode(),
        None,
    ),
    (
        "converse-bad-types",
        f"/model/{MODEL}/converse",
        json.dumps(
            {
                "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
                "inferenceConfig": {"maxTokens": "abc"},
            }
        ).encode(),
        None,
    ),
    (
        "converse-config-list",
        f"/model/{MODEL}/converse",
        json.dumps(
            {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": [1]}
        ).encode(),
        None,
    ),
    (
        "lone-surrogate",
        "/v1/completions",
        b'{"model": "' + MODEL.encode() + b'", "prompt": "a\\ud800b", "max_tokens": 4}',
        None,
    ),
    ("broken-json", f"/model/{MODEL}/invoke", b'{"prompt": "x", ', None),
    (
        "too-many-prompts",
        "/v1/completions",
        json.dumps({"model": MODEL, "prompt": ["x"] * 2000, "max_tokens": 1}).encode(),
        None,
    ),
    (
        "wrong-key",
        "/v1/completions",
        json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 4}).encode(),
        {"authorization": "Bearer not-a-key", "content-type": "application/json"},
    ),
]


def _retryable(status: int, text: str) -> bool:
    return status in (429, 502, 503) or "ModelNotReady" in text or "ServiceUnavailable" in text


async def good_client(client: httpx.AsyncClient, tally: Tally, stop_at: float, rng: random.Random) -> None:
    while time.monotonic() < stop_at:
        kind, path, body, streamed = rng.choice(GOOD)
        tally.sent[kind] += 1
        try:
            if streamed:
                async with client.stream("POST", path, json=body, headers=_headers()) as resp:
                    text = (await resp.aread()).decode(errors="replace")
                status = resp.status_code
                well_formed = status == 200 and "data: [DONE]" in text
            else:
                resp = await client.post(path, json=body, headers=_headers())
                status, text = resp.status_code, resp.text
                well_formed = status == 200 and bool(resp.json())
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            tally.lost[kind] += 1
            tally.note(kind, "lost", repr(exc))
            continue
        if well_formed:
            tally.ok[kind] += 1
        elif status >= 500 or status == 429:
            if _retryable(status, text):
                tally.retryable[kind] += 1
                tally.note(kind, f"retryable-{status}", text)
                await asyncio.sleep(0.2)
            else:
                tally.server_errors[kind] += 1
                tally.note(kind, f"{status}", text)
        else:
            tally.wrong[kind] += 1
            tally.note(kind, f"wrong-{status}", text)


async def disconnecting_client(
    client: httpx.AsyncClient, tally: Tally, stop_at: float, rng: random.Random
) -> None:
    body = {"model": MODEL, "prompt": "Stream me a story", "max_tokens": 64, "stream": True}
    while time.monotonic() < stop_at:
        tally.sent["disconnect"] += 1
        try:
            if rng.random() < 0.5:  # hang up after the first event
                async with client.stream("POST", "/v1/completions", json=body, headers=_headers()) as resp:
                    async for _ in resp.aiter_bytes():
                        break
            else:  # abandon the request before any answer
                task = asyncio.create_task(client.post("/v1/completions", json=body, headers=_headers()))
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, httpx.HTTPError):
                    pass
            tally.ok["disconnect"] += 1
        except httpx.HTTPError as exc:
            tally.note("disconnect", "error", repr(exc))
        await asyncio.sleep(0.05)


async def hostile_client(client: httpx.AsyncClient, tally: Tally, stop_at: float, rng: random.Random) -> None:
    while time.monotonic() < stop_at:
        kind, path, raw, headers = rng.choice(HOSTILE)
        tally.sent[kind] += 1
        try:
            resp = await client.post(path, content=raw, headers=headers or _headers())
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            tally.lost[kind] += 1
            tally.note(kind, "lost", repr(exc))
            continue
        if 400 <= resp.status_code < 500 and resp.status_code != 429:
            tally.client_errors[kind] += 1
        elif resp.status_code >= 500:  # a bad body must never look like the server's fault
            tally.server_errors[kind] += 1
            tally.note(kind, f"{resp.status_code}", resp.text)
        else:
            tally.wrong[kind] += 1
            tally.note(kind, f"wrong-{resp.status_code}", resp.text)
        await asyncio.sleep(0.1)


def _proc_rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def copy_pids(client: httpx.AsyncClient) -> list[int]:
    resp = await client.get("/outcrop/copies", headers=_headers())
    return [
        int(c["pid"]) for c in resp.json().get("copies", []) if c.get("pid") and c.get("state") == "Ready"
    ]


async def sampler(
    client: httpx.AsyncClient,
    gateway_pid: int,
    samples: list[dict[str, float]],
    stop_at: float,
    every_s: float,
) -> None:
    started = time.monotonic()
    while time.monotonic() < stop_at:
        pids = await copy_pids(client)
        samples.append(
            {
                "t_s": time.monotonic() - started,
                "gateway_rss_mb": _proc_rss_bytes(gateway_pid) / 1e6,
                "gateway_fds": _fd_count(gateway_pid),
                "copies": len(pids),
                "copies_rss_mb": sum(_proc_rss_bytes(p) for p in pids) / 1e6,
            }
        )
        await asyncio.sleep(every_s)


async def kill_one_copy(client: httpx.AsyncClient, at_s: float, events: list[str]) -> None:
    await asyncio.sleep(at_s)
    pids = await copy_pids(client)
    if not pids:
        events.append("copy kill: no ready copy found")
        return
    os.kill(pids[0], signal.SIGKILL)
    events.append(f"kill -9 of copy pid {pids[0]} at {at_s:.0f} s")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        now = await copy_pids(client)
        if len(now) >= len(pids) and pids[0] not in now:
            events.append(f"replacement ready after {time.monotonic() - (deadline - 300):.1f} s")
            return
    events.append("no replacement copy within 300 s")


def _bedrock(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "bedrock",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}),
    )


def import_model(url: str, folder: Path) -> None:
    bedrock = _bedrock(url)
    arn = bedrock.create_model_import_job(
        jobName="soak-import",
        importedModelName=MODEL,
        roleArn="arn:aws:iam::123456789012:role/Soak",
        modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
    )["jobArn"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = bedrock.get_model_import_job(jobIdentifier=arn)
        if job["status"] == "Completed":
            return
        if job["status"] != "InProgress":
            raise SystemExit(f"import failed: {job.get('failureMessage')}")
        time.sleep(0.3)
    raise SystemExit("import did not finish in 300 s")


def submit_batch(url: str, root: Path, records: int) -> str:
    inputs, outputs = root / "batch-in", root / "batch-out"
    inputs.mkdir(parents=True, exist_ok=True)
    outputs.mkdir(parents=True, exist_ok=True)
    with open(inputs / "records.jsonl", "w") as f:
        for i in range(records):
            f.write(
                json.dumps(
                    {"recordId": f"r{i:06d}", "modelInput": {"prompt": f"Record {i}", "max_gen_len": 4}}
                )
            )
            f.write("\n")
    return str(
        _bedrock(url).create_model_invocation_job(
            jobName="soak-batch",
            modelId=MODEL,
            roleArn="arn:aws:iam::123456789012:role/Soak",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": str(inputs) + "/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": str(outputs) + "/"}},
        )["jobArn"]
    )


def batch_result(url: str, root: Path, job_arn: str, timeout_s: float) -> tuple[str, Counter[str]]:
    bedrock = _bedrock(url)
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = bedrock.get_model_invocation_job(jobIdentifier=job_arn)["status"]
        if status in ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"):
            break
        time.sleep(2)
    seen: Counter[str] = Counter()
    for out in (root / "batch-out").rglob("*.jsonl.out"):
        for line in out.read_text().splitlines():
            if line.strip():
                seen[json.loads(line)["recordId"]] += 1
    return status, seen


def _median(samples: list[dict[str, float]], key: str, lo: float, hi: float) -> float:
    n = len(samples)
    part = [s[key] for s in samples[int(n * lo) : max(int(n * hi), int(n * lo) + 1)]]
    return statistics.median(part) if part else float("nan")


async def run_load(
    args: argparse.Namespace, url: str, gateway_pid: int
) -> tuple[Tally, list[dict[str, float]], list[str]]:
    tally, samples, events = Tally(), [], []
    seconds = args.minutes * 60
    stop_at = time.monotonic() + seconds
    rng = random.Random(args.seed)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=args.request_timeout, limits=limits) as client:
        tasks = [
            good_client(client, tally, stop_at, random.Random(rng.random())) for _ in range(args.clients)
        ]
        tasks += [disconnecting_client(client, tally, stop_at, random.Random(rng.random())) for _ in range(2)]
        tasks += [hostile_client(client, tally, stop_at, random.Random(rng.random())) for _ in range(2)]
        tasks.append(sampler(client, gateway_pid, samples, stop_at, args.sample_seconds))
        tasks.append(kill_one_copy(client, seconds * args.kill_at, events))
        await asyncio.gather(*tasks)
    return tally, samples, events


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="How long the load runs.")
    parser.add_argument("--clients", type=int, default=6, help="Concurrent clients sending good requests.")
    parser.add_argument(
        "--kill-at", type=float, default=0.5, help="When to kill a copy, as a fraction of the run."
    )
    parser.add_argument(
        "--batch-records", type=int, default=200, help="Records of the batch job run alongside."
    )
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="Seconds between RSS/FD samples.")
    parser.add_argument(
        "--request-timeout", type=float, default=120.0, help="Seconds before a request counts lost."
    )
    parser.add_argument("--flat-tolerance", type=float, default=0.15, help="Allowed growth of RSS and FDs.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the clients' choices.")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (logs, data dir).")
    args = parser.parse_args()

    from outcrop.testing.tiny_models import build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="outcrop-soak-"))
    print(f"soak: {args.minutes:g} min, {machine()}, work folder {root}")
    folder = build_tiny_model(root / "model")
    port = free_port()
    env = _env(
        OUTCROP_REGISTRY__ALLOWED_ROOTS=json.dumps([str(root)]),
        OUTCROP_SERVER__LOG_LEVEL="warning",
        OUTCROP_THROTTLING__ENABLED="false",
        OUTCROP_SERVING__DEFAULTS__MIN_COPIES="2",
        OUTCROP_SERVING__DEFAULTS__MAX_COPIES="2",
        OUTCROP_SERVING__WORKER_THREADS="1",
        OUTCROP_AUTH__BOOTSTRAP_ACCESS_KEY_ID=ACCESS_KEY_ID,
        OUTCROP_AUTH__BOOTSTRAP_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        OUTCROP_AUTH__BOOTSTRAP_API_KEY=API_KEY,
    )
    import subprocess

    cmd = [sys.executable, "-m", "outcrop", "--data-dir", str(root / "data"), "serve", "--port", str(port)]
    log_path = gateway_log(root, port)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}"
    failed: list[str] = []
    try:
        wait_healthy(url, proc, log_path)
        import_model(url, folder)
        warm = httpx.post(
            f"{url}/outcrop/models/{MODEL}/warm", json={"copies": 2}, headers=_headers(), timeout=300
        )
        warm.raise_for_status()
        job_arn = submit_batch(url, root, args.batch_records)
        load_started = time.monotonic()
        tally, samples, events = asyncio.run(run_load(args, url, proc.pid))
        print(f"load ran {time.monotonic() - load_started:.0f} s; load average now {os.getloadavg()[0]:.2f}")
        status, seen = batch_result(url, root, job_arn, timeout_s=600)
        gateway_alive = proc.poll() is None
    finally:
        stop(proc)

    print("\nsamples (t, gateway RSS MB, gateway FDs, ready copies, copies RSS MB):")
    for s in samples:
        print(
            f"  {s['t_s']:7.0f} s  {s['gateway_rss_mb']:8.1f}  {s['gateway_fds']:5.0f}  "
            f"{s['copies']:3.0f}  {s['copies_rss_mb']:8.1f}"
        )
    print("\nevents:", *events, sep="\n  ")
    kinds = sorted(set(tally.sent))
    print(f"\n{'kind':22} {'sent':>7} {'ok':>7} {'4xx':>6} {'5xx':>5} {'retry':>6} {'lost':>5} {'wrong':>6}")
    for k in kinds:
        print(
            f"{k:22} {tally.sent[k]:7} {tally.ok[k]:7} {tally.client_errors[k]:6} {tally.server_errors[k]:5} "
            f"{tally.retryable[k]:6} {tally.lost[k]:5} {tally.wrong[k]:6}"
        )
    for key, detail in sorted(tally.examples.items()):
        print(f"  e.g. {key}: {detail}")

    five_xx, lost, wrong = (
        sum(tally.server_errors.values()),
        sum(tally.lost.values()),
        sum(tally.wrong.values()),
    )
    missing = [f"r{i:06d}" for i in range(args.batch_records) if seen[f"r{i:06d}"] == 0]
    doubled = [r for r, n in seen.items() if n > 1]
    print(
        f"\nbatch job: {status}, {len(seen)} of {args.batch_records} records written, "
        f"{len(missing)} missing, {len(doubled)} written twice"
    )
    if len(samples) >= 8:
        for key in ("gateway_rss_mb", "gateway_fds"):
            early, late = _median(samples, key, 0.25, 0.5), _median(samples, key, 0.75, 1.0)
            growth = (late - early) / early if early else 0.0
            print(f"{key}: second-quarter median {early:.1f}, last-quarter median {late:.1f} ({growth:+.1%})")
            if growth > args.flat_tolerance:
                failed.append(f"{key} grew {growth:+.1%}")
    print(
        f"5xx: {five_xx}   lost: {lost}   wrong answers: {wrong}   "
        f"retryable 429/502/503: {sum(tally.retryable.values())}   gateway alive: {gateway_alive}"
    )
    if five_xx:
        failed.append(f"{five_xx} 5xx")
    if lost:
        failed.append(f"{lost} lost requests")
    if wrong:
        failed.append(f"{wrong} wrong answers")
    if missing or doubled:
        failed.append(f"batch: {len(missing)} missing, {len(doubled)} doubled")
    if not gateway_alive:
        failed.append("the gateway died")
    print("result:", "PASS" if not failed else "FAIL: " + "; ".join(failed))
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"kept {root}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
