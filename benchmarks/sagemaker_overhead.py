"""What the SageMaker surface and its processing step cost: the same null copy called straight, through
Bedrock's InvokeModel, through InvokeEndpoint, through InvokeEndpoint with input/output templates, and
through an inference component.

    .venv/bin/python benchmarks/sagemaker_overhead.py
    .venv/bin/python benchmarks/sagemaker_overhead.py --requests 2000 --rounds 3

It starts ``outcrop serve`` with null copies (``benchmarks/gateway_overhead.py``'s setup), imports a
tiny model, warms one copy, deploys two endpoints over it with boto3 ``sagemaker`` (one plain, one
whose model carries OUTCROP_INPUT_TEMPLATE / OUTCROP_OUTPUT_TEMPLATE) and a shared endpoint with the
model as an inference component, and sends one client's requests back to back, alternating the five
targets per round so drift hits all of them. It prints
p50/p99 of each and the differences that issue 17 sets goals for: the templates add <= 1 ms p50 at
concurrency 1, and InvokeEndpoint costs no more than InvokeModel (p50 difference <= 0; the case
study's proxy hop was 5-10 ms). Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The shared setup (null-copy gateway, tiny model import, load generator) lives with the gateway benchmark.
from gateway_overhead import (
    ACCESS_KEY_ID,
    API_KEY,
    MODEL_NAME,
    SECRET_ACCESS_KEY,
    KeepAliveConnection,
    Run,
    copy_token,
    print_header,
    warm_gateway,
)

QA_TEMPLATE = "Question: {{ question }} Context: {{ context }}"
ANSWER_TEMPLATE = '{"answer": {{ generated_text | tojson }}}'


def deploy(gateway: str) -> None:
    import boto3

    sm = boto3.client(
        "sagemaker",
        endpoint_url=gateway,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    for name, env in (
        ("bench", {}),
        ("bench-tpl", {"OUTCROP_INPUT_TEMPLATE": QA_TEMPLATE, "OUTCROP_OUTPUT_TEMPLATE": ANSWER_TEMPLATE}),
    ):
        sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": MODEL_NAME, "Environment": env})
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1}],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1})
    # The same model as an inference component on a shared endpoint (the variant names no model).
    sm.create_endpoint_config(
        EndpointConfigName="bench-shared",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "InstanceType": "ml.g5.xlarge", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName="bench-shared", EndpointConfigName="bench-shared")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="bench-shared", WaiterConfig={"Delay": 1})
    sm.create_inference_component(
        InferenceComponentName="bench-ic",
        EndpointName="bench-shared",
        Specification={"ModelName": "bench"},
        RuntimeConfig={"CopyCount": 1},
    )
    for _ in range(600):
        status = sm.describe_inference_component(InferenceComponentName="bench-ic")[
            "InferenceComponentStatus"
        ]
        if status != "Creating":
            break
        time.sleep(0.1)
    if status != "InService":
        raise SystemExit(f"inference component bench-ic is {status}")


async def one_client(url: str, body: bytes, requests: int, headers: str) -> list[float]:
    """One client's latencies, back to back on one keep-alive connection (``headers``: raw header lines)."""
    parts = urlsplit(url)
    conn = KeepAliveConnection(parts.hostname or "127.0.0.1", parts.port or 80, headers)
    await conn.open()
    try:
        if (status := await conn.post(parts.path, body)) != 200:  # warm the connection and the route
            raise SystemExit(f"{url} answered {status}; is the server healthy?")
        latencies = []
        for _ in range(requests):
            started = time.perf_counter()
            status = await conn.post(parts.path, body)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise SystemExit(f"{url} answered {status}; is the server healthy?")
        return latencies
    finally:
        conn.close()


async def measure(args: argparse.Namespace, gateway: str, copy_url: str, token: str) -> None:
    params = {"max_new_tokens": 3}
    targets = {
        "direct copy": (
            f"{copy_url}/v1/completions",
            {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 3},
            token,
        ),
        "bedrock InvokeModel": (
            f"{gateway}/model/{MODEL_NAME}/invoke",
            {"prompt": "Hello", "max_tokens": 3},
            API_KEY,
        ),
        "sagemaker InvokeEndpoint": (
            f"{gateway}/endpoints/bench/invocations",
            {"inputs": "Hello", "parameters": params},
            API_KEY,
        ),
        "  + templates": (
            f"{gateway}/endpoints/bench-tpl/invocations",
            {"question": "Hello", "context": "a greeting", "parameters": params},
            API_KEY,
        ),
        "  via inference component": (
            f"{gateway}/endpoints/bench-shared/invocations",
            {"inputs": "Hello", "parameters": params},
            API_KEY,
        ),
    }
    runs: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (url, body, key) in targets.items():
            headers = f"Authorization: Bearer {key}\r\n"
            if "component" in name:
                headers += "X-Amzn-SageMaker-Inference-Component: bench-ic\r\n"
            runs[name] += await one_client(url, json.dumps(body).encode(), args.requests, headers)
    print(f"{'target (1 client)':>26} | {'p50':>8} {'p99':>8}")
    result = {name: Run(lat, 1.0) for name, lat in runs.items()}
    for name, run in result.items():
        print(f"{name:>26} | {run.pct(0.5):>6.3f}ms {run.pct(0.99):>6.2f}ms")
    templates = result["  + templates"].pct(0.5) - result["sagemaker InvokeEndpoint"].pct(0.5)
    surface = result["sagemaker InvokeEndpoint"].pct(0.5) - result["bedrock InvokeModel"].pct(0.5)
    component = result["  via inference component"].pct(0.5) - result["sagemaker InvokeEndpoint"].pct(0.5)
    print(
        f"\ntemplates add {templates:+.3f} ms p50 (goal <= 1 ms: {'met' if templates <= 1.0 else 'MISSED'}); "
        f"InvokeEndpoint vs InvokeModel {surface:+.3f} ms p50 (goal <= 0, within noise: "
        f"{'met' if surface <= 0.05 else 'MISSED'}); the case study's proxy hop: 5-10 ms\n"
        f"an inference component vs a model variant: {component:+.3f} ms p50"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="Requests per round and target.")
    p.add_argument("--rounds", type=int, default=3, help="Alternating rounds over the five targets.")
    args = p.parse_args()
    print_header()
    with warm_gateway("outcrop-sagemaker-bench-") as (gateway, proc, copy):
        deploy(gateway)
        print(f"gateway {gateway} (pid {proc.pid}); null copy {copy['url']} (pid {copy['pid']})\n")
        asyncio.run(measure(args, gateway, copy["url"], copy_token(copy["pid"])))


if __name__ == "__main__":
    main()
