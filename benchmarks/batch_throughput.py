"""Batch inference throughput and its cost to online traffic, as ratios measured in one run.

    .venv/bin/python benchmarks/batch_throughput.py --threads 1
    .venv/bin/python benchmarks/batch_throughput.py --threads 1 --records 500 --new-tokens 16

On the benchmark model (Llama shape, hidden 512, 8 layers, vocab 2048, ~25M parameters,
fp32, CPU) with a real ``outcrop serve`` and one copy (Outcrop's worker):

1. a batch job of ``--records`` prompt records (``--new-tokens`` each, ``ignore_eos``):
   records/s and tokens/s against the offline ceiling: the same prompts through Outcrop's
   engine in-process, all submitted at once, at the copy's batch size (goal >= 0.85x). The
   ceiling runs half its prompts before the job and half after, so drifting machine load
   hits both sides;
2. online latency: p95 of a steady open-loop load on ``/v1/completions`` with and without a
   batch job on the same model, in ``--online-rounds`` interleaved pairs of windows (the
   order alternates; a job is started for each "with" window and stopped after it)
   (goal <= 1.5x);
3. the same records sent as on-demand requests one at a time by a client (a sample of
   ``--sequential-sample`` records), against the batch job's records/s: the speed-up.

The load average (``/proc/loadavg``) is printed at each phase: the machine is shared.

Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from engine_throughput import MODEL_SHAPES, free_port, percentile, prompts, stop, wait_healthy  # noqa: E402

ACCESS_KEY, SECRET_KEY, API_KEY = "bench", "benchsecret", "bench-api-key-0001"
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}


def build_model(root: Path) -> Path:
    from outcrop.testing.tiny_models import build_tiny_model

    return build_tiny_model(root / "bench-model", **MODEL_SHAPES["bench"])  # type: ignore[arg-type]


# ------------------------------------------------------------------ ceiling


class Ceiling:
    """Outcrop's engine in this process: prompts all queued at once, stepped until done."""

    def __init__(self, model_dir: Path, new_tokens: int, max_batch: int, threads: int | None) -> None:
        from outcrop.engine.runtime import WorkerOptions, WorkerRuntime
        from outcrop.engine.sampling import SamplingParams

        self.runtime = WorkerRuntime(
            WorkerOptions(model_dir=model_dir, max_batch=max_batch, max_model_len=512, threads=threads)
        )
        self.runtime.load()
        self.params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        self.max_batch = max_batch

    def run(self, texts: list[str]) -> float:
        """Seconds to generate every prompt."""
        from outcrop.engine.engine import EngineRequest

        engine, tok = self.runtime.engine, self.runtime.tokenizer
        assert engine is not None and tok is not None
        for i, text in enumerate(texts):
            engine.add_request(EngineRequest(f"c{i}", tok.encode(text), self.params, stream=False))
        start = time.perf_counter()
        while engine.num_unfinished:
            engine.step()
        return time.perf_counter() - start

    def close(self) -> None:
        self.runtime.stop_engine()


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ------------------------------------------------------------------ the server


class Server:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
        env.update(
            {
                "OUTCROP_REGISTRY__ALLOWED_ROOTS": json.dumps([str(root)]),
                "OUTCROP_AUTH__BOOTSTRAP_ACCESS_KEY_ID": ACCESS_KEY,
                "OUTCROP_AUTH__BOOTSTRAP_SECRET_ACCESS_KEY": SECRET_KEY,
                "OUTCROP_AUTH__BOOTSTRAP_API_KEY": API_KEY,
                "OUTCROP_SERVING__WORKER_MAX_BATCH": str(args.max_batch),
                "OUTCROP_SERVING__DEFAULTS__MAX_CONCURRENCY_PER_COPY": str(args.max_batch),
                "OUTCROP_SERVING__MAX_QUEUE_PER_MODEL": "4096",
                "OUTCROP_THROTTLING__ENABLED": "false",
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        if args.threads:
            env["OUTCROP_SERVING__WORKER_THREADS"] = str(args.threads)
        if args.batch_in_flight:
            env["OUTCROP_BATCH__MAX_IN_FLIGHT_PER_MODEL"] = str(args.batch_in_flight)
        if args.online_reserved is not None:
            env["OUTCROP_BATCH__ONLINE_RESERVED_SLOTS_PER_COPY"] = str(args.online_reserved)
        if args.max_lower_priority_seqs is not None:
            # The local launcher passes extra worker arguments through this setting.
            env["OUTCROP_SERVING__WORKER_EXTRA_ARGS"] = json.dumps(
                ["--max-lower-priority-seqs", str(args.max_lower_priority_seqs)]
            )
        self.log = root / "server.log"
        cmd = [
            sys.executable,
            "-m",
            "outcrop",
            "--data-dir",
            str(root / "data"),
            "serve",
            "--port",
            str(self.port),
        ]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        try:
            wait_healthy(self.url, self.proc, 120)
        except RuntimeError:
            print(self.log.read_text()[-3000:], file=sys.stderr)
            raise
        import boto3

        self.bedrock = boto3.client(
            "bedrock",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=600
        )

    def import_model(self, folder: Path, name: str) -> None:
        arn = self.bedrock.create_model_import_job(
            jobName=f"import-{name}",
            importedModelName=name,
            roleArn="arn:aws:iam::123456789012:role/Bench",
            modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
        )["jobArn"]
        while (job := self.bedrock.get_model_import_job(jobIdentifier=arn))["status"] == "InProgress":
            time.sleep(0.2)
        assert job["status"] == "Completed", job.get("failureMessage")
        self.http.post(f"/outcrop/models/{name}/warm", json={"copies": 1}).raise_for_status()

    def batch(self, name: str, model: str, input_path: Path, output: Path) -> str:
        arn: str = self.bedrock.create_model_invocation_job(
            jobName=name,
            roleArn="arn:aws:iam::123456789012:role/Bench",
            modelId=model,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": str(input_path)}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": str(output)}},
        )["jobArn"]
        return arn

    def wait_batch(self, arn: str) -> tuple[dict[str, Any], float]:
        """The finished job and its InProgress seconds (measured from the client, 20 ms polls)."""
        started: float | None = None
        while True:
            job = self.bedrock.get_model_invocation_job(jobIdentifier=arn)
            if job["status"] == "InProgress" and started is None:
                started = time.perf_counter()
            if job["status"] in TERMINAL:
                return job, time.perf_counter() - (started or time.perf_counter())
            time.sleep(0.02)

    def job_id(self, arn: str) -> str:
        return arn.rsplit("/", 1)[-1]

    def start_job_and_fill(
        self, name: str, model: str, records: Path, output: Path, fill_seconds: float
    ) -> str:
        arn = self.batch(name, model, records, output)
        while self.bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] != "InProgress":
            time.sleep(0.05)
        time.sleep(fill_seconds)  # let the job fill the copy's batch
        return arn

    def stop_job(self, arn: str) -> str:
        """Stop a job and wait until it is terminal; its status just before the stop."""
        status = str(self.bedrock.get_model_invocation_job(jobIdentifier=arn)["status"])
        if status not in TERMINAL:
            self.http.post(f"/model-invocation-job/{self.job_id(arn)}/stop").raise_for_status()
        self.wait_batch(arn)
        return status

    def close(self) -> None:
        stop(self.proc)


def write_records(path: Path, texts: list[str], new_tokens: int) -> Path:
    with path.open("w") as fh:
        for i, text in enumerate(texts):
            body = {"prompt": text, "max_gen_len": new_tokens, "temperature": 0, "ignore_eos": True}
            fh.write(json.dumps({"recordId": f"r{i:06d}", "modelInput": body}) + "\n")
    return path


async def online_load(url: str, model: str, rate: float, seconds: float, new_tokens: int) -> list[float]:
    """Open-loop load: one request every 1/rate s for ``seconds``; returns each latency."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def one(i: int, http: httpx.AsyncClient) -> None:
        body = {
            "model": model,
            "prompt": f"Online {i}: hello there",
            "max_tokens": new_tokens,
            "ignore_eos": True,
        }
        start = time.perf_counter()
        r = await http.post(f"{url}/v1/completions", json=body, headers=headers)
        r.raise_for_status()
        latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(timeout=600) as http:
        tasks = []
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            tasks.append(asyncio.create_task(one(i, http)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
    return latencies


def sequential(server: Server, model: str, texts: list[str], new_tokens: int) -> float:
    """Seconds per record when a client sends the records as on-demand requests one at a time."""
    start = time.perf_counter()
    for text in texts:
        body = {"prompt": text, "max_gen_len": new_tokens, "temperature": 0, "ignore_eos": True}
        server.http.post(f"/model/{model}/invoke", json=body).raise_for_status()
    return (time.perf_counter() - start) / len(texts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--max-batch", type=int, default=32, help="The copy's batch size (and the ceiling's).")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    p.add_argument(
        "--batch-in-flight",
        type=int,
        default=None,
        help="batch.max_in_flight_per_model (default: the copy's slots minus those reserved for online).",
    )
    p.add_argument(
        "--online-reserved", type=int, default=None, help="batch.online_reserved_slots_per_copy (default 2)."
    )
    p.add_argument(
        "--max-lower-priority-seqs",
        type=int,
        default=None,
        help="The worker's --max-lower-priority-seqs (batch rows decoding beside online ones).",
    )
    p.add_argument("--online-rate", type=float, default=1.0, help="Online requests per second.")
    p.add_argument("--online-seconds", type=float, default=15.0, help="Length of one online window.")
    p.add_argument("--online-rounds", type=int, default=3, help="Pairs of windows (with / without a job).")
    p.add_argument("--online-job-records", type=int, default=1000, help="Records of each job in measure 2.")
    p.add_argument("--sequential-sample", type=int, default=40)
    p.add_argument("--skip-throughput", action="store_true", help="Only measures 2 and 3.")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="outcrop-batch-bench-") as tmp:
        root = Path(tmp)
        model_dir = build_model(root)
        texts = prompts(args.records)
        tokens_total = args.records * args.new_tokens
        print(
            f"model: bench (hidden 512, 8 layers, vocab 2048), fp32; {args.records} records x {args.new_tokens} tokens"
        )

        t0 = time.perf_counter()

        def phase(text: str) -> None:
            print(f"[{time.perf_counter() - t0:6.1f}s] (load {loadavg()}) {text}", flush=True)

        ceil = Ceiling(model_dir, args.new_tokens, args.max_batch, args.threads)
        ceil.run(texts[: args.max_batch])  # warm-up
        half = len(texts) // 2
        ceil_seconds = batch_seconds = 0.0
        if not args.skip_throughput:
            phase(
                f"1/4 ceiling, first half ({half} prompts): Outcrop's engine in-process, all queued at once ..."
            )
            ceil_seconds += ceil.run(texts[:half])

        phase("starting outcrop serve, importing and warming the model ...")
        server = Server(root, args)
        windows: list[tuple[str, list[float], str]] = []  # (kind, latencies, job status during it)
        try:
            server.import_model(model_dir, "bench")
            records = write_records(root / "records.jsonl", texts, args.new_tokens)
            if not args.skip_throughput:
                phase(f"2/4 batch job of {args.records} records through outcrop serve ...")
                job, batch_seconds = server.wait_batch(
                    server.batch("bench-batch", "bench", records, root / "out")
                )
                assert job["status"] == "Completed" and job["successRecordCount"] == args.records, job
                phase(f"1/4 ceiling, second half ({len(texts) - half} prompts) ...")
                ceil_seconds += ceil.run(texts[half:])
            ceil.close()

            n_job = min(args.online_job_records, len(texts))
            job_records = write_records(root / "job-records.jsonl", texts[:n_job], args.new_tokens)
            for r in range(args.online_rounds):
                order = ["without", "with"] if r % 2 == 0 else ["with", "without"]
                for kind in order:
                    phase(f"3/4 round {r + 1}/{args.online_rounds}: online load {kind} a batch job ...")
                    arn = None
                    if kind == "with":
                        arn = server.start_job_and_fill(
                            f"bench-online-{r}", "bench", job_records, root / f"out-{r}", 2.0
                        )
                    lat = asyncio.run(
                        online_load(
                            server.url, "bench", args.online_rate, args.online_seconds, args.new_tokens
                        )
                    )
                    status = server.stop_job(arn) if arn else "-"
                    windows.append((kind, lat, status))

            phase("4/4 the same records one at a time as on-demand requests (a sample) ...")
            per_record = sequential(server, "bench", texts[: args.sequential_sample], args.new_tokens)
            phase("done")
        except Exception:
            print(server.log.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            server.close()

    alone = [x for kind, lat, _ in windows if kind == "without" for x in lat]
    during = [x for kind, lat, _ in windows if kind == "with" for x in lat]
    ended_early = [status for kind, _, status in windows if kind == "with" and status != "InProgress"]
    print()
    if not args.skip_throughput:
        batch_rps, ceil_rps = args.records / batch_seconds, args.records / ceil_seconds
        print(f"{'':32} {'records/s':>10} {'tokens/s':>10} {'seconds':>9}")
        print(
            f"{'ceiling (engine in-process)':32} {ceil_rps:10.2f} {tokens_total / ceil_seconds:10.0f} {ceil_seconds:9.1f}"
        )
        print(
            f"{'batch job (outcrop serve)':32} {batch_rps:10.2f} {tokens_total / batch_seconds:10.0f} {batch_seconds:9.1f}"
        )
    print(f"{'on-demand, one at a time':32} {1 / per_record:10.2f} {args.new_tokens / per_record:10.0f}")
    print()
    print("online windows (p95 / median ms, requests):")
    for kind, lat, status in windows:
        note = f", job {status} at the end" if kind == "with" else ""
        print(
            f"  {kind:8} {percentile(lat, 0.95) * 1000:6.0f} / {statistics.median(lat) * 1000:6.0f}  {len(lat)}{note}"
        )
    print()
    p95_alone, p95_during = percentile(alone, 0.95), percentile(during, 0.95)
    if not args.skip_throughput:
        print(f"1. batch / ceiling throughput:           {batch_rps / ceil_rps:.2f}x   (goal >= 0.85x)")
    print(
        f"2. online p95 during / without batch:    {p95_during / p95_alone:.2f}x   (goal <= 1.5x; "
        f"p95 {p95_alone * 1000:.0f} ms -> {p95_during * 1000:.0f} ms, median "
        f"{statistics.median(alone) * 1000:.0f} -> {statistics.median(during) * 1000:.0f} ms, "
        f"{len(alone)} + {len(during)} requests at {args.online_rate:g}/s in {args.online_rounds} interleaved pairs"
        f"{'; a job ended before its window did' if ended_early else ''})"
    )
    if not args.skip_throughput:
        print(f"3. batch speed-up over one-at-a-time:    {batch_rps * per_record:.1f}x")
    else:
        print(
            f"3. one-at-a-time: {1 / per_record:.2f} records/s (run without --skip-throughput for the ratio)"
        )


if __name__ == "__main__":
    main()
