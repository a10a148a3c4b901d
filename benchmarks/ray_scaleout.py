"""Scale-out on a Ray cluster: null copies on 1 vs 2 nodes, through 1 vs 2 gateways; node death.

    .venv/bin/python benchmarks/ray_scaleout.py
    .venv/bin/python benchmarks/ray_scaleout.py --seconds 8 --rounds 3 --deaths 5

It starts a Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head without CPUs
and two worker nodes of one CPU each), two ``outcrop serve`` gateways sharing one store
(SQLite in one data dir, as two gateways on one machine can) whose ``ray`` launcher runs null
copies (``python -m outcrop.testing.nullcopy``: answers at once) reserving half a CPU each.
Then:

1. **Scale-out.** OpenAI ``/v1/completions`` at 32 keep-alive clients for ``--seconds``, with
   one copy (one node) and then two copies (``SPREAD``: one per node), sent to one gateway
   or split over both; rounds alternate so drift hits every configuration. Prints
   requests/s, the ratios, and where the CPU went (gateways, copies, the load generator), so
   the limit is visible: this machine has 2 cores for everything.
2. **Node death.** With two copies on two nodes and the 32 clients running, it removes the
   node of one copy and times how long until that copy is noticed Failed, and until a
   replacement is Ready (on the node that is left), counting failed requests by HTTP status;
   then adds a node back. ``--deaths`` times. Copies are not moved back when the node
   returns, so a later death can take both copies at once (the table says how many).

Throttling is off (its defaults would cap the rate). Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import (
    API_KEY,
    MODEL_NAME,
    REPO_ROOT,
    KeepAliveConnection,
    free_port,
    gateway_log,
    import_model,
    wait_healthy,
)
from gateway_overhead import start_gateway as start_overhead_gateway

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
NAMESPACE = "outcrop-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def start_gateway(root: Path, cluster_address: str) -> tuple[subprocess.Popen[bytes], str]:
    """A gateway of the shared fleet: gateway_overhead's null-copy gateway on the ``ray`` launcher."""
    port = free_port()
    proc = start_overhead_gateway(
        root,
        port,
        {
            "PYTHONPATH": str(REPO_ROOT),
            "OUTCROP_SERVING__LAUNCHER": "ray",
            "OUTCROP_SERVING__HEALTH_INTERVAL_SECONDS": "0.5",
            "OUTCROP_SERVING__RESTART_BACKOFF_INITIAL_SECONDS": "0.2",
            "OUTCROP_SERVING__DEFAULTS__MAX_COPIES": "2",
            "OUTCROP_RAY_ADDRESS": cluster_address,
            "OUTCROP_RAY__NAMESPACE": NAMESPACE,
            "OUTCROP_RAY__COPY_LAUNCHER": "command",
            "OUTCROP_RAY__NUM_CPUS": "0.5",
            "OUTCROP_RAY__SYNC_INTERVAL_SECONDS": "0.5",
            "OUTCROP_RAY__SCALER_LEASE_SECONDS": "3",
        },
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, gateway_log(root, port))
    return proc, url


def ready_copies(gateway: str) -> dict[str, dict[str, Any]]:
    copies = httpx.get(f"{gateway}/outcrop/copies", headers=HEADERS, timeout=10).json()["copies"]
    return {c["copyId"]: c for c in copies if c["state"] == "Ready"}


def wait_for(check: Any, timeout_s: float = 60.0, poll_s: float = 0.05) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout_s:
            raise SystemExit("timed out waiting for the copies")
        time.sleep(poll_s)
    return time.monotonic() - began


class Load:
    """32 keep-alive clients split over the gateways, counting answers and failures, until stopped."""

    def __init__(self, gateways: list[str], concurrency: int) -> None:
        self.gateways, self.concurrency = gateways, concurrency
        self.ok = self.failed = 0
        self.failures: collections.Counter[int] = collections.Counter()  # HTTP status (0: no answer) -> count
        self.stop = asyncio.Event()

    async def run(self) -> None:
        body = json.dumps({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 3}).encode()
        auth = f"Authorization: Bearer {API_KEY}\r\n"

        async def client(i: int) -> None:
            url = httpx.URL(self.gateways[i % len(self.gateways)])
            conn: KeepAliveConnection | None = None
            while not self.stop.is_set():
                try:
                    if conn is None:
                        conn = KeepAliveConnection(url.host, url.port or 80, auth)
                        await conn.open()
                    status = await conn.post("/v1/completions", body)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    status = 0
                    if conn is not None:
                        conn.close()
                    conn = None
                if status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.failures[status] += 1
            if conn is not None:
                conn.close()

        await asyncio.gather(*(client(i) for i in range(self.concurrency)))


async def measure_rps(gateways: list[str], concurrency: int, seconds: float) -> tuple[float, int]:
    load = Load(gateways, concurrency)
    task = asyncio.create_task(load.run())
    await asyncio.sleep(0.5)  # connections open, first requests through
    ok0, t0 = load.ok, time.perf_counter()
    await asyncio.sleep(seconds)
    rps = (load.ok - ok0) / (time.perf_counter() - t0)
    load.stop.set()
    await task
    return rps, load.failed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=6.0, help="Length of each measured round.")
    p.add_argument("--rounds", type=int, default=2, help="Rounds per configuration (alternating).")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--deaths", type=int, default=3, help="Node deaths to time.")
    p.add_argument("--skip-scaleout", action="store_true", help="Only time node deaths.")
    args = p.parse_args()
    print(f"$ {' '.join(sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"python {platform.python_version()}"
    )
    import ray
    from ray.cluster_utils import Cluster

    health = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "object_store_memory": 100 * 1024**2,
            "_system_config": health,
        },
    )
    workers = [cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, include_dashboard=False)
    print(f"ray {ray.__version__}: head (0 CPUs) + 2 worker nodes of 1 CPU; copies reserve 0.5 CPU\n")
    root = Path(tempfile.mkdtemp(prefix="outcrop-ray-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        proc_a, gw_a = start_gateway(root, cluster.address)
        procs.append(proc_a)
        import_model(gw_a, root)
        proc_b, gw_b = start_gateway(root, cluster.address)
        procs.append(proc_b)

        def node_of(copy_id: str) -> str:
            actor = ray.get_actor(f"outcrop-copy-{copy_id}", namespace=NAMESPACE)
            return str(ray.get(actor.describe.remote(), timeout=5)["node_id"])

        results: dict[tuple[int, int], list[float]] = {}
        cpu: dict[tuple[int, int], dict[str, float]] = {}
        for copies in (1, 2):
            if args.skip_scaleout and copies == 1:
                continue
            warm = httpx.post(
                f"{gw_a}/outcrop/models/{MODEL_NAME}/warm",
                json={"copies": copies},
                headers=HEADERS,
                timeout=120,
            )
            if warm.status_code != 200:
                raise SystemExit(f"warming failed: {warm.status_code} {warm.text}")
            wait_for(
                lambda n=copies: (
                    len(ready_copies(gw_a)) == n and ready_copies(gw_b).keys() == ready_copies(gw_a).keys()
                )
            )
            ready = ready_copies(gw_a)
            nodes = {node_of(i) for i in ready}
            copy_pids = [int(c["pid"]) for c in ready.values()]
            print(
                f"{copies} copy(ies) on {len(nodes)} node(s): " + ", ".join(c["url"] for c in ready.values())
            )
            for _ in range(0 if args.skip_scaleout else args.rounds):
                for n_gateways in (1, 2):
                    gws = [gw_a, gw_b][:n_gateways]
                    pids = {"gateways": [proc_a.pid, proc_b.pid][:n_gateways], "copies": copy_pids}
                    before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
                    gen0, wall0 = time.process_time(), time.perf_counter()
                    rps, failed = asyncio.run(measure_rps(gws, args.concurrency, args.seconds))
                    wall = time.perf_counter() - wall0
                    used = {k: (sum(cpu_seconds(p) for p in v) - before[k]) / wall for k, v in pids.items()}
                    used["load generator"] = (time.process_time() - gen0) / wall
                    if failed:
                        print(f"  ({failed} failed requests)")
                    results.setdefault((copies, n_gateways), []).append(rps)
                    cpu[(copies, n_gateways)] = used
        if not args.skip_scaleout:
            print()
            print(
                f"| copies (nodes) | gateways | requests/s (median of {args.rounds}) | CPU cores used: gateways / copies / load generator |"
            )
            print("|---|---|---|---|")
            med = {k: statistics.median(v) for k, v in results.items()}
            for (copies, gws), value in sorted(med.items()):
                u = cpu[(copies, gws)]
                print(
                    f"| {copies} ({copies}) | {gws} | {value:,.0f} | "
                    f"{u['gateways']:.2f} / {u['copies']:.2f} / {u['load generator']:.2f} |"
                )
            print()
            print(f"2 gateways / 1 gateway, copies on 2 nodes: {med[(2, 2)] / med[(2, 1)]:.2f}x")
            print(f"2 nodes / 1 node, through 2 gateways: {med[(2, 2)] / med[(1, 2)]:.2f}x")
            print(f"2 gateways on 2 nodes / 1 gateway on 1 node: {med[(2, 2)] / med[(1, 1)]:.2f}x\n")

        # -- node death -> replacement Ready, under load through both gateways
        async def deaths() -> list[tuple[float, float, int, str]]:
            out = []
            for _ in range(args.deaths):
                load = Load([gw_a, gw_b], args.concurrency)
                task = asyncio.create_task(load.run())
                await asyncio.sleep(1.0)
                before = ready_copies(gw_a)
                victim_id = next(iter(before))
                victim_node = node_of(victim_id)
                # 2 when an earlier replacement landed next to the other copy
                lost = sum(node_of(i) == victim_node for i in before)
                node = next(w for w in workers if w.node_id == victim_node)
                failed0 = load.failed
                t0 = time.monotonic()
                cluster.remove_node(node, allow_graceful=False)
                workers.remove(node)
                while victim_id in ready_copies(gw_a):
                    await asyncio.sleep(0.02)
                noticed = time.monotonic() - t0
                while len(ready_copies(gw_a)) < 2:
                    await asyncio.sleep(0.02)
                replaced = time.monotonic() - t0
                await asyncio.sleep(0.5)
                load.stop.set()
                await task
                failed = load.failed - failed0
                detail = ", ".join(f"HTTP {code or 'none'}: {n}" for code, n in sorted(load.failures.items()))
                out.append((noticed, replaced, lost, f"{failed} ({detail})" if failed else "0"))
                workers.append(cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2))
                cluster.wait_for_nodes()
            return out

        timings = asyncio.run(deaths())
        print(
            "| node death | copies on the lost node | copy noticed gone (s) | 2 copies Ready again (s) | failed requests |"
        )
        print("|---|---|---|---|---|")
        for i, (noticed, replaced, lost, failed) in enumerate(timings, 1):
            print(f"| {i} | {lost} | {noticed:.2f} | {replaced:.2f} | {failed} |")
        print(
            f"median: noticed {statistics.median(t[0] for t in timings):.2f} s, "
            f"replacement Ready {statistics.median(t[1] for t in timings):.2f} s"
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
