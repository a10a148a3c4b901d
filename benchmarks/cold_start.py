"""Cold start through the gateway vs loading the same model in a bare worker (issue 3).

    .venv/bin/python benchmarks/cold_start.py
    .venv/bin/python benchmarks/cold_start.py --model large --trials 3

Two times to the first token, in the same run, alternating sides every trial:

- **gateway**: the model is scaled to zero (no copy running). The clock starts when an OpenAI
  ``/v1/completions`` request with ``stream: true`` is sent to ``outcrop serve``; the gateway
  holds it while the autoscaler starts a copy (``local`` launcher: Outcrop's worker) and sends
  it on once the copy is ready. The clock stops at the first SSE chunk that carries text.
- **bare**: the clock starts at ``Popen`` of ``python -m outcrop.engine.worker`` on the same
  model folder (the one the gateway's copy loads, read from the copy's command line), polls its
  ``/health`` every 0.05 s (the gateway's own startup poll), then sends the same streaming
  request; it stops at the first text chunk.

Both sides start a fresh Python process that imports torch and loads the weights, so the
difference is what the gateway adds: noticing demand, materialising the folder, launching,
health polling and proxying. Between gateway trials the script waits for the model to scale
back to zero (``idle_seconds_before_scale_down`` is set to 1 s). One untimed trial per side
comes first so both read the weights from a warm page cache. Goal: gateway <= 1.3 x bare + 1 s.

``--model small`` is the ~25M-parameter llama of serving_throughput.py (~100 MB);
``--model large`` a ~250M-parameter llama (hidden 1024, 16 layers, vocab 32000, ~1 GB), so
loading, not process start, dominates. Never run as a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from serving_throughput import (
    REPO_ROOT,
    Gateway,
    _env,
    build_model,
    exit_cleanly_on_sigterm,
    free_port,
    gateway,
    import_model,
    machine,
    stop,
    wait_worker_ready,
    worker_command,
)

MODELS: dict[str, dict[str, Any]] = {
    "small": {
        "family": "llama", "hidden_size": 512, "intermediate_size": 1280, "num_layers": 8,
        "num_heads": 8, "num_kv_heads": 8, "vocab_size": 2048,
    },
    "large": {
        "family": "llama", "hidden_size": 1024, "intermediate_size": 2816, "num_layers": 16,
        "num_heads": 16, "num_kv_heads": 16, "vocab_size": 32000, "max_shard_size": "300MB",
    },
}  # fmt: skip
# Matches outcrop/serving/fleet.py STARTUP_POLL_SECONDS, so both sides notice "ready" alike.
HEALTH_POLL_SECONDS = 0.05
MAX_TOKENS = 8


def first_token_seconds(url: str, name: str, started: float, timeout_s: float = 600) -> float:
    """Send a streaming completion; seconds from ``started`` to the first chunk carrying text."""
    body = {
        "model": name,
        "prompt": "Hello there",
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "ignore_eos": True,
    }
    first: float | None = None
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=timeout_s) as response:
        if response.status_code != 200:
            response.read()
            raise SystemExit(f"{url} answered HTTP {response.status_code}: {response.text[:500]}")
        for line in response.iter_lines():
            if first is None and line.startswith("data: ") and line != "data: [DONE]":
                choice = (json.loads(line[6:]).get("choices") or [{}])[0]
                if choice.get("text"):
                    first = time.perf_counter() - started
    if first is None:
        raise SystemExit(f"{url} streamed no text")
    return first


def model_copies(gw: Gateway, name: str) -> list[dict[str, Any]]:
    """The model's copies that are not gone yet (Starting, Ready or Draining)."""
    copies = httpx.get(f"{gw.url}/outcrop/copies", timeout=30).json()["copies"]
    return [c for c in copies if c["modelName"] == name and c["state"] in ("Starting", "Ready", "Draining")]


def wait_scaled_to_zero(gw: Gateway, name: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while model_copies(gw, name):
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not scale to zero in {timeout_s:g} s")
        time.sleep(0.2)
    time.sleep(0.5)  # let the stopped process's memory and CPU settle


@dataclass
class Trial:
    """One cold start; phases in seconds from the moment the clock started."""

    first_token_s: float
    launched_s: float  # gateway: the copy was created (Starting); bare: 0, Popen is the start
    ready_s: float  # /health answered 200


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def gateway_trial(gw: Gateway, name: str) -> tuple[Trial, Path]:
    """A first request on the scaled-to-zero model, and the folder its copy loaded."""
    wait_scaled_to_zero(gw, name)
    wall, started = time.time(), time.perf_counter()
    seconds = first_token_seconds(gw.url, name, started)
    (copy,) = [c for c in model_copies(gw, name) if c["state"] == "Ready"]
    args = Path(f"/proc/{copy['pid']}/cmdline").read_bytes().decode().split("\0")
    trial = Trial(seconds, _epoch(copy["startedAt"]) - wall, _epoch(copy["readyAt"]) - wall)
    return trial, Path(args[args.index("--model-dir") + 1])


def bare_trial(folder: Path, name: str, work: Path, threads: int | None) -> Trial:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(work / "bare-worker.log", "ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            worker_command(folder, port, name, threads),
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,  # like the launcher
        )
    try:
        wait_worker_ready(url, proc, poll_s=HEALTH_POLL_SECONDS)
        ready = time.perf_counter() - started
        return Trial(first_token_seconds(url, name, started), 0.0, ready)
    finally:
        stop(proc)


def _phases(t: Trial) -> str:
    return f"{t.first_token_s:>6.2f} = {t.launched_s:>5.2f} + {t.ready_s - t.launched_s:>6.2f} + {t.first_token_s - t.ready_s:>5.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="small")
    p.add_argument("--trials", type=int, default=3, help="Timed trials per side (after one untimed each).")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads of both workers (default: torch's)."
    )
    p.add_argument("--work-dir", type=Path, default=None, help="Keeps the built model between runs.")
    args = p.parse_args()
    exit_cleanly_on_sigterm()
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="outcrop-cold-start-"))
    work.mkdir(parents=True, exist_ok=True)
    name = f"cold-{args.model}"
    folder = build_model(work / f"model-{args.model}", MODELS[args.model])
    settings = {"OUTCROP_SERVING__DEFAULTS__IDLE_SECONDS_BEFORE_SCALE_DOWN": "1"}
    if args.threads:
        settings["OUTCROP_SERVING__WORKER_THREADS"] = str(args.threads)
    with gateway(work, work, **settings) as gw:
        import_model(gw, folder, name)
        warm_gateway, copy_folder = gateway_trial(gw, name)
        warm_bare = bare_trial(copy_folder, name, work, args.threads)
        print(f"gateway {gw.url} (pid {gw.proc.pid}); both sides load {copy_folder}")
        print(f"untimed first trials: gateway {_phases(warm_gateway)}, bare {_phases(warm_bare)}")
        print(
            "phases: first token = until the copy is launched + launch to /health 200 + ready to first token\n"
        )
        times: dict[str, list[float]] = {"gateway": [], "bare": []}
        print(
            f"{'trial':>5} | {'gateway: first token = launch + to ready + to token':<52} | bare: same phases"
        )
        for trial in range(args.trials):
            order = ["gateway", "bare"] if trial % 2 == 0 else ["bare", "gateway"]
            done: dict[str, Trial] = {}
            for side in order:
                if side == "gateway":
                    done[side] = gateway_trial(gw, name)[0]
                else:
                    done[side] = bare_trial(copy_folder, name, work, args.threads)
                times[side].append(done[side].first_token_s)
            print(f"{trial + 1:>5} | {_phases(done['gateway']):<52} | {_phases(done['bare'])}")
    g, b = statistics.median(times["gateway"]), statistics.median(times["bare"])
    budget = 1.3 * b + 1.0
    print(f"\n| side | time to first token, median of {args.trials} (s) | trials (s) |")
    print("|---|---:|---|")
    print(f"| gateway, scaled to zero | {g:.2f} | {', '.join(f'{x:.2f}' for x in times['gateway'])} |")
    print(f"| bare worker process | {b:.2f} | {', '.join(f'{x:.2f}' for x in times['bare'])} |")
    print(
        f"\ngateway / bare: {g / b:.2f}x, gateway - bare: {g - b:+.2f} s; goal gateway <= 1.3 x bare + 1 s "
        f"= {budget:.2f} s: {'met' if g <= budget else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
