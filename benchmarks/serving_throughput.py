"""Throughput through the gateway vs the same load sent straight to one copy (issue 3).

    .venv/bin/python benchmarks/serving_throughput.py
    .venv/bin/python benchmarks/serving_throughput.py --concurrency 32 --requests 64 --rounds 3 --max-tokens 64

It builds a ~25M-parameter llama (hidden 512, 8 layers, 8 heads, vocab 2048; random weights),
starts ``outcrop serve`` (the ``local`` launcher: Outcrop's worker), imports the model and warms
one copy. Beside it, it starts a bare worker on the same folder with the same flags
(``python -m outcrop.engine.worker``), the yardstick. Then it sends ``--concurrency`` clients of
OpenAI ``/v1/completions`` (non-streaming, ``ignore_eos``: every request makes ``--max-tokens``
tokens) to three sides in turn, ``--rounds`` times each, rotating the order every round so drift
on a shared machine hits all of them: the bare worker (``direct``), the gateway's own copy called
straight (``copy``: no hop, tells the hop apart from two worker processes differing) and
``outcrop serve`` (``gateway``). The load generator is ``outcrop bench``'s
(``outcrop.cli.bench.run_level``), in this process. Each row also shows the engine steps the
level took (the copy's ``/metrics``), so a hop that splits batches would show as more steps.

The gateway's per-copy cap (``serving.defaults.max_concurrency_per_copy``, default 16) is set to
``--concurrency`` so both sides put the same number of requests on the copy at once; pass
``--per-copy-cap 16`` to measure the shipped default instead. Goal: gateway tokens/s >= 0.95x
direct. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.gateway_overhead import copy_token  # noqa: E402
from outcrop.cli.bench import LevelResult, completion_body, run_level  # noqa: E402

MODEL_NAME = "bench25m"
# ~25M parameters: 2 x 2048 x 512 embeddings + 8 x (4 x 512^2 attention + 3 x 512 x 1280 MLP).
MODEL_SPEC: dict[str, Any] = {
    "family": "llama",
    "hidden_size": 512,
    "intermediate_size": 1280,
    "num_layers": 8,
    "num_heads": 8,
    "num_kv_heads": 8,
    "vocab_size": 2048,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, nproc {os.cpu_count()}, python {platform.python_version()}, load average {load:.2f}"


def build_model(folder: Path, spec: dict[str, Any] | None = None) -> Path:
    """A generated model (random weights, a trained BPE tokenizer), built once per folder."""
    from outcrop.testing.tiny_models import build_tiny_model

    if (folder / "config.json").is_file():
        return folder
    started = time.perf_counter()
    build_tiny_model(folder, **(spec or MODEL_SPEC))
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    print(f"built {folder} (~{size / 4e6:.0f}M float32 parameters) in {time.perf_counter() - started:.1f} s")
    return folder


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``) into SystemExit, so ``finally`` blocks stop the processes started."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    env["PYTHONPATH"] = str(REPO_ROOT)  # copies and workers import this checkout, like the gateway
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Gateway:
    """A running ``outcrop serve`` on loopback."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


@contextmanager
def gateway(work: Path, import_root: Path, **env: str) -> Iterator[Gateway]:
    """``outcrop serve`` with auth and throttling off (a load test is one anonymous principal)."""
    port = free_port()
    settings = {
        "OUTCROP_REGISTRY__ALLOWED_ROOTS": json.dumps([str(import_root)]),
        "OUTCROP_THROTTLING__ENABLED": "false",
        "OUTCROP_AUTH__ENABLED": "false",  # ignored by a checkout without auth
        "OUTCROP_SERVER__LOG_LEVEL": "warning",
        **env,
    }
    data = work / "gateway-data"
    shutil.rmtree(data, ignore_errors=True)
    log_path = work / "gateway.log"
    cmd = [sys.executable, "-m", "outcrop", "--data-dir", str(data), "serve", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, env=_env(**settings), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
    gw = Gateway(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"outcrop serve exited:\n{gw.log_tail()}")
            try:
                if httpx.get(f"{gw.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"outcrop serve did not become healthy:\n{gw.log_tail()}")
            time.sleep(0.1)
        yield gw
    finally:
        stop(proc)


def import_model(gw: Gateway, folder: Path, name: str) -> None:
    """CreateModelImportJob through the Bedrock control plane, then wait for Completed."""
    import boto3
    from botocore.config import Config

    bedrock = boto3.client(
        "bedrock",
        endpoint_url=gw.url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 1}),
    )
    arn = bedrock.create_model_import_job(
        jobName=f"{name}-import",
        importedModelName=name,
        roleArn="arn:aws:iam::123456789012:role/Bench",
        modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
    )["jobArn"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = bedrock.get_model_import_job(jobIdentifier=arn)
        if job["status"] == "Completed":
            return
        if job["status"] != "InProgress":
            raise SystemExit(f"import of {name} failed: {job.get('failureMessage')}")
        time.sleep(0.2)
    raise SystemExit(f"import of {name} did not finish in 300 s")


def copies_of(gw: Gateway, name: str) -> list[dict[str, Any]]:
    copies = httpx.get(f"{gw.url}/outcrop/copies", timeout=30).json()["copies"]
    return [c for c in copies if c["modelName"] == name and c["state"] in ("Starting", "Ready")]


def worker_command(folder: Path, port: int, name: str, threads: int | None = None) -> list[str]:
    """The command the ``local`` launcher runs for a copy (outcrop/cluster/launchers.py)."""
    cmd = [
        sys.executable, "-m", "outcrop.engine.worker", "--model-dir", str(folder),
        "--port", str(port), "--host", "127.0.0.1", "--served-name", name,
    ]  # fmt: skip
    return cmd + (["--threads", str(threads)] if threads else [])


def wait_worker_ready(url: str, proc: subprocess.Popen[bytes], poll_s: float, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the bare worker exited with {proc.returncode}")
            try:
                if http.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
    raise SystemExit(f"the bare worker at {url} was not ready after {timeout_s:g} s")


def engine_steps(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    """The copy's ``outcrop_engine_steps`` counter by kind (prefill, decode, ...) from its /metrics."""
    steps: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30, headers=headers).text.splitlines():
        if line.startswith("outcrop_engine_steps_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            steps[kind] = float(line.rsplit(" ", 1)[1])
    return steps


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise(levels: list[LevelResult]) -> tuple[float, float, float]:
    """(tokens/s, requests/minute, p95 s) over several runs of one side, pooled."""
    seconds = sum(lv.seconds for lv in levels)
    tokens = sum(lv.completion_tokens for lv in levels)
    merged = LevelResult(
        concurrency=levels[0].concurrency,
        latencies_seconds=[x for lv in levels for x in lv.latencies_seconds],
        completion_tokens=tokens,
        seconds=seconds,
    )
    return merged.tokens_per_second, merged.requests_per_minute, merged.p95_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=64, help="Requests per round and side.")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument(
        "--per-copy-cap", type=int, default=None, help="Gateway per-copy cap (default: --concurrency)."
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads of both copies (default: torch's)."
    )
    p.add_argument("--work-dir", type=Path, default=None, help="Keeps the built model between runs.")
    args = p.parse_args()
    exit_cleanly_on_sigterm()
    cap = args.per_copy_cap or args.concurrency
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="outcrop-serving-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = build_model(work / "model")
    body = completion_body(MODEL_NAME, "Summarise the quarterly report for the sales team:", args.max_tokens)
    direct_proc: subprocess.Popen[bytes] | None = None
    settings = {"OUTCROP_SERVING__DEFAULTS__MAX_CONCURRENCY_PER_COPY": str(cap)}
    if args.threads:
        settings["OUTCROP_SERVING__WORKER_THREADS"] = str(args.threads)
    with gateway(work, work, **settings) as gw:
        try:
            import_model(gw, folder, MODEL_NAME)
            httpx.post(
                f"{gw.url}/outcrop/models/{MODEL_NAME}/warm", json={"copies": 1}, timeout=300
            ).raise_for_status()
            (copy,) = copies_of(gw, MODEL_NAME)
            direct_port = free_port()
            direct_url = f"http://127.0.0.1:{direct_port}"
            with open(work / "direct-worker.log", "wb") as log:
                direct_proc = subprocess.Popen(
                    worker_command(folder, direct_port, MODEL_NAME, args.threads),
                    env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                )  # fmt: skip
            wait_worker_ready(direct_url, direct_proc, poll_s=0.05)
            print(f"gateway {gw.url} (pid {gw.proc.pid}) -> copy {copy['url']} (pid {copy['pid']}); "
                  f"bare worker {direct_url} (pid {direct_proc.pid}); per-copy cap {cap}; threads {args.threads or 'default'}")  # fmt: skip
            print(f"load: {args.concurrency} clients x {args.requests} requests x {args.rounds} rounds per side, "
                  f"{args.max_tokens} tokens each (ignore_eos)\n")  # fmt: skip
            # "copy" is the gateway's own copy called straight (no hop): it tells a slower gateway
            # side caused by the hop apart from one caused by the two worker processes differing.
            sides = {"direct": direct_url, "copy": copy["url"], "gateway": gw.url}
            # The gateway's copy answers only its gateway: the "copy" side sends the copy's token.
            copy_auth = {"authorization": f"Bearer {copy_token(int(copy['pid']))}"}
            auth = {"direct": None, "copy": copy_auth, "gateway": None}
            warm_body = {**body, "max_tokens": 4}  # warm-up: a first full batch pays one-off allocations
            for side, url in sides.items():
                asyncio.run(run_level(url, warm_body, args.concurrency, args.concurrency, headers=auth[side]))
            results: dict[str, list[LevelResult]] = {side: [] for side in sides}
            print(
                f"{'round':>5} {'side':>8} {'tokens/s':>9} {'req/min':>8} {'p95 s':>6}  engine steps of the level; CPU the gateway process used meanwhile"
            )
            names = list(sides)
            copy_url = {"direct": direct_url, "copy": copy["url"], "gateway": copy["url"]}
            steps_auth = {"direct": None, "copy": copy_auth, "gateway": copy_auth}
            for r in range(args.rounds):
                for side in names[r % 3 :] + names[: r % 3]:  # rotate the order every round
                    before, gw_cpu = engine_steps(copy_url[side], steps_auth[side]), cpu_seconds(gw.proc.pid)
                    level = asyncio.run(
                        run_level(sides[side], body, args.concurrency, args.requests, headers=auth[side])
                    )
                    after = engine_steps(copy_url[side], steps_auth[side])
                    gw_cpu = cpu_seconds(gw.proc.pid) - gw_cpu
                    steps = ", ".join(f"{k} {after[k] - before.get(k, 0):.0f}" for k in sorted(after))
                    steps += f"; gateway CPU {gw_cpu:.2f} s"
                    if level.errors:
                        raise SystemExit(
                            f"{level.errors} requests failed on the {side} side: {level.first_error}"
                        )
                    results[side].append(level)
                    print(f"{r + 1:>5} {side:>8} {level.tokens_per_second:>9.1f} "
                          f"{level.requests_per_minute:>8.0f} {level.p95_seconds:>6.2f}  {steps}")  # fmt: skip
            summary = {side: summarise(levels) for side, levels in results.items()}
            labels = {
                "direct": "bare worker, called directly",
                "copy": "the gateway's copy, called directly",
                "gateway": "through the gateway",
            }
            print()
            print("| side | tokens/s | requests/minute | p95 latency (s) |")
            print("|---|---:|---:|---:|")
            for side, (tps, rpm, p95) in summary.items():
                print(f"| {labels[side]} | {tps:.1f} | {rpm:.0f} | {p95:.2f} |")
            ratio = summary["gateway"][0] / summary["direct"][0]
            print()
            for num, den in (("gateway", "direct"), ("gateway", "copy"), ("copy", "direct")):
                rounds = [
                    n.tokens_per_second / d.tokens_per_second
                    for n, d in zip(results[num], results[den], strict=True)
                ]
                print(f"{num} / {den} tokens/s: pooled {summary[num][0] / summary[den][0]:.3f}, median of rounds "
                      f"{statistics.median(rounds):.3f} (per round: {', '.join(f'{x:.2f}' for x in rounds)})")  # fmt: skip
            print(f"goal gateway / direct >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'}")
            print(f"machine after the run: load average {os.getloadavg()[0]:.2f}")
        finally:
            if direct_proc is not None:
                stop(direct_proc)


if __name__ == "__main__":
    main()
