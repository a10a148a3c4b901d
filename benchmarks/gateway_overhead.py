"""What the gateway hop costs: a null copy called directly vs through ``outcrop serve``.

    .venv/bin/python benchmarks/gateway_overhead.py
    .venv/bin/python benchmarks/gateway_overhead.py --requests 3000 --rounds 3 --sustain-seconds 10
    .venv/bin/python benchmarks/gateway_overhead.py --body chat-tools   # tool requests (docs/tools.md)

It starts ``outcrop serve`` whose ``command`` launcher runs null copies
(``python -m outcrop.testing.nullcopy``: answers at once, speaks the copy contract), imports
a tiny generated model, warms one copy, and then sends the same OpenAI ``/v1/completions``
request

1. straight to that copy (the yardstick), and
2. through the gateway (OpenAI surface -> router -> the same copy),

at 1 and at 32 concurrent clients, alternating direct and gateway rounds so drift hits both.
Back-to-back clients saturate a server that answers instantly, so the 32-client rows are also
run paced (``--paced-rates``: 32 clients offering a fixed total rate below saturation), which
separates the hop's cost from queueing in a saturated process.
The per-copy cap is raised to 64 for the run so that both sides give the copy all 32 clients.
It prints p50/p99 latency of each, the added milliseconds, and the requests/s one gateway
process sustains at 32 clients. Goals (issue 3): added p50 <= 1 ms and p99 <= 5 ms at 1 and
at 32 clients; >= 1,000 requests/s through one gateway. Throttling is switched off for the
run (its defaults would cap the rate), invocation logging is left as configured (off).

The load generator is a minimal keep-alive HTTP/1.1 client on asyncio, so the client's own
cost is small next to the hop being measured. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MODEL_NAME = "gateway-bench"
# The gateway's bootstrap admin (auth stays on, as in production): boto3 signs with the key
# pair, the load generator sends the bearer API key.
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "BENCHKEY", "bench-secret"
API_KEY = "bench-api-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KeepAliveConnection:
    """One HTTP/1.1 connection that POSTs JSON and reads Content-Length responses."""

    def __init__(self, host: str, port: int, auth: str = "") -> None:
        self.host, self.port, self.auth = host, port, auth
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> int:
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{self.auth}\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Run:
    latencies_s: list[float]
    seconds: float

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.seconds


async def load(
    url: str,
    body: bytes,
    concurrency: int,
    requests: int,
    seconds: float | None = None,
    rate: float | None = None,
    key: str = API_KEY,
) -> Run:
    """``concurrency`` clients, each sending back to back, ``requests`` in all (or for ``seconds``).

    With ``rate`` (requests/s over all clients) each client instead sends on a Poisson schedule of
    ``rate / concurrency``: the same clients, but offering a fixed load below what saturates the
    server, so the latency measured is the hop's and not a queue's.
    """
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    auth = f"Authorization: Bearer {key}\r\n"
    conns = [KeepAliveConnection(host, port, auth) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    for c in conns:  # warm each connection
        await c.post(path, body)
    latencies: list[float] = []
    remaining = requests
    stop_at = time.perf_counter() + seconds if seconds else None
    errors = 0

    rng = random.Random(7)

    async def client(conn: KeepAliveConnection) -> None:
        nonlocal remaining, errors
        next_at = time.perf_counter()
        while True:
            if rate:
                next_at += rng.expovariate(rate / concurrency)
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if stop_at is not None:
                if time.perf_counter() >= stop_at:
                    return
            else:
                if remaining <= 0:
                    return
                remaining -= 1
            started = time.perf_counter()
            status = await conn.post(path, body)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    took = time.perf_counter() - began
    for c in conns:
        c.close()
    if errors:
        raise SystemExit(f"{errors} requests failed against {url}; is the server healthy?")
    return Run(latencies, took)


def gateway_log(root: Path, port: int) -> Path:
    return root / f"gateway-{port}.log"


def start_gateway(root: Path, port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``outcrop serve`` on ``port`` whose copies are null copies (``extra_env`` adds or overrides settings)."""
    template = (
        f"{sys.executable} -m outcrop.testing.nullcopy --port {{port}} --host {{host}} "
        "--served-name {served_name}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    env.update(
        {
            "OUTCROP_SERVING__LAUNCHER": "command",
            "OUTCROP_SERVING__COMMAND_TEMPLATE": template,
            "OUTCROP_THROTTLING__ENABLED": "false",
            # The hop is measured, not the per-copy cap: let the one copy take all 32 clients
            # at once, as it does when called directly (16, the default, would queue half).
            "OUTCROP_SERVING__DEFAULTS__MAX_CONCURRENCY_PER_COPY": "64",
            "OUTCROP_REGISTRY__ALLOWED_ROOTS": json.dumps([str(root)]),
            "OUTCROP_SERVER__LOG_LEVEL": "warning",
            "OUTCROP_AUTH__BOOTSTRAP_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "OUTCROP_AUTH__BOOTSTRAP_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "OUTCROP_AUTH__BOOTSTRAP_API_KEY": API_KEY,
            **(extra_env or {}),
        }
    )
    cmd = [sys.executable, "-m", "outcrop", "--data-dir", str(root / "data"), "serve", "--port", str(port)]
    log = open(gateway_log(root, port), "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"outcrop serve exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"outcrop serve did not become healthy:\n{log_path.read_text()[-3000:]}")


def import_model(url: str, root: Path) -> None:
    import boto3
    from botocore.config import Config

    from outcrop.testing.tiny_models import build_tiny_model

    folder = build_tiny_model(root / "model")
    bedrock = boto3.client(
        "bedrock",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}),
    )
    arn = bedrock.create_model_import_job(
        jobName="gateway-bench",
        importedModelName=MODEL_NAME,
        roleArn="arn:aws:iam::123456789012:role/Bench",
        modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
    )["jobArn"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = bedrock.get_model_import_job(jobIdentifier=arn)
        if job["status"] != "InProgress":
            if job["status"] != "Completed":
                raise SystemExit(f"import failed: {job.get('failureMessage')}")
            return
        time.sleep(0.2)
    raise SystemExit("import did not finish in 120 s")


def print_header() -> None:
    """The command and the machine, first lines of every overhead benchmark's report."""
    print(f"$ {' '.join(sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )


@contextmanager
def warm_gateway(prefix: str) -> Iterator[tuple[str, subprocess.Popen[bytes], dict]]:
    """A gateway on a fresh data dir with MODEL_NAME imported and one null copy warm:
    ``(gateway url, its process, the copy as GET /outcrop/copies lists it)``; stopped after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    proc = start_gateway(root, port)
    try:
        wait_healthy(gateway, proc, gateway_log(root, port))
        import_model(gateway, root)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        warm = httpx.post(
            f"{gateway}/outcrop/models/{MODEL_NAME}/warm", json={"copies": 1}, headers=headers, timeout=120
        )
        if warm.status_code != 200:
            raise SystemExit(f"warming the copy failed: {warm.status_code} {warm.text}")
        copies = httpx.get(f"{gateway}/outcrop/copies", headers=headers, timeout=10).json()["copies"]
        (copy,) = [c for c in copies if c["modelName"] == MODEL_NAME]
        yield gateway, proc, copy
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def copy_token(pid: int) -> str:
    """The null copy's token (it answers only its gateway), from its environment: same user, Linux."""
    for var in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if var.startswith(b"OUTCROP_COPY_TOKEN="):
            return var.split(b"=", 1)[1].decode()
    raise SystemExit(f"copy {pid} has no OUTCROP_COPY_TOKEN in its environment")


# Two tool schemas of the size pydantic writes for a small model (nested object, optional fields),
# for --body chat-tools: what the gateway's tool checks (outcrop/protocol/tools.py) cost per request.
_PLACE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "population": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
    },
    "required": ["name"],
}
TOOL_SCHEMAS = [
    {
        "type": "object",
        "$defs": {"Place": _PLACE},
        "properties": {
            "title": {"type": "string"},
            "places": {"type": "array", "items": {"$ref": "#/$defs/Place"}},
            "rating": {"type": "number", "minimum": 0, "maximum": 5},
        },
        "required": ["title", "places"],
    },
    {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}},
]


def request_body(kind: str) -> tuple[str, bytes]:
    """The copy path and the JSON body every request of a run sends (--body)."""
    if kind == "completion":
        return "/v1/completions", json.dumps(
            {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 3}
        ).encode()
    chat: dict[str, object] = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 3,
    }
    if kind == "chat-tools":
        chat["tools"] = [
            {"type": "function", "function": {"name": f"tool_{i}", "parameters": schema}}
            for i, schema in enumerate(TOOL_SCHEMAS)
        ]
        chat["tool_choice"] = "required"
    return "/v1/chat/completions", json.dumps(chat).encode()


async def measure(args: argparse.Namespace, gateway: str, copy_url: str, token: str) -> None:
    path, body = request_body(args.body)
    direct_url, gateway_url = f"{copy_url}{path}", f"{gateway}{path}"
    print(
        f"{'clients':>8} | {'direct p50':>10} {'p99':>7} | {'gateway p50':>11} {'p99':>7} | "
        f"{'added p50':>9} {'added p99':>9} | goal"
    )

    async def compare(label: str, concurrency: int, requests: int, rate: float | None = None) -> None:
        direct: list[float] = []
        through: list[float] = []
        for _ in range(args.rounds):  # alternating, so drift hits both sides
            direct += (await load(direct_url, body, concurrency, requests, rate=rate, key=token)).latencies_s
            through += (await load(gateway_url, body, concurrency, requests, rate=rate)).latencies_s
        d, g = Run(direct, 1.0), Run(through, 1.0)
        added50, added99 = g.pct(0.5) - d.pct(0.5), g.pct(0.99) - d.pct(0.99)
        ok = "met" if added50 <= 1.0 and added99 <= 5.0 else "MISSED"
        print(
            f"{label:>8} | {d.pct(0.5):>8.3f}ms {d.pct(0.99):>5.2f}ms | {g.pct(0.5):>9.3f}ms "
            f"{g.pct(0.99):>5.2f}ms | {added50:>7.3f}ms {added99:>7.3f}ms | p50<=1ms p99<=5ms: {ok}"
        )

    for concurrency in args.concurrency:
        await compare(str(concurrency), concurrency, args.requests)
    for rate in args.paced_rates:
        await compare(f"32@{rate:g}/s", 32, max(200, int(rate * args.paced_seconds)), rate)
    sustained = await load(gateway_url, body, 32, 0, seconds=args.sustain_seconds)
    direct_rate = await load(direct_url, body, 32, 0, seconds=args.sustain_seconds, key=token)
    verdict = "met" if sustained.rps >= 1000 else "MISSED"
    print(
        f"\nsustained at 32 clients for {args.sustain_seconds:g} s: gateway {sustained.rps:,.0f} req/s, "
        f"direct {direct_rate.rps:,.0f} req/s (ratio {sustained.rps / direct_rate.rps:.2f}); "
        f"goal >= 1,000 req/s through the gateway: {verdict}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="Requests per round and side.")
    p.add_argument("--rounds", type=int, default=3, help="Alternating direct/gateway rounds per level.")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    p.add_argument("--sustain-seconds", type=float, default=5.0)
    p.add_argument(
        "--paced-rates",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[100.0, 500.0],
        help="Also run 32 clients offering these fixed total rates (req/s, Poisson): the hop below saturation.",
    )
    p.add_argument("--paced-seconds", type=float, default=4.0, help="Length of each paced round.")
    p.add_argument(
        "--body",
        choices=["completion", "chat", "chat-tools"],
        default="completion",
        help="What each request is: a completion, a chat, or a chat with two tools and tool_choice required.",
    )
    args = p.parse_args()
    print_header()
    with warm_gateway("outcrop-gateway-bench-") as (gateway, proc, copy):
        print(f"gateway {gateway} (pid {proc.pid}); null copy {copy['url']} (pid {copy['pid']})\n")
        asyncio.run(measure(args, gateway, copy["url"], copy_token(copy["pid"])))


if __name__ == "__main__":
    main()
