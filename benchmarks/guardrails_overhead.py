"""What a guardrail costs: the same Converse request with and without a word + PII guardrail.

    .venv/bin/python benchmarks/guardrails_overhead.py
    .venv/bin/python benchmarks/guardrails_overhead.py --requests 500 --rounds 4

It starts ``outcrop serve`` whose copies are null copies (they answer at once, so the time
measured is the gateway's), imports a tiny generated model, warms one copy, creates a guardrail
with a word policy (20 custom words and phrases + the managed PROFANITY list) and a PII policy
(EMAIL, PHONE, CREDIT_DEBIT_CARD_NUMBER, US_SOCIAL_SECURITY_NUMBER, IP_ADDRESS, NAME, ADDRESS,
AWS_ACCESS_KEY anonymized; one custom regex), and then sends one client's Converse requests
of 2,000 characters of user text:

1. without ``guardrailConfig`` (the yardstick), and
2. with it (input and output checked),

after an untimed warm-up, alternating sides and texts round by round so drift hits all alike. Two texts: ``clean`` (nothing to find, the common case)
and ``pii`` (four entities to mask). It prints p50/p99 of each, the added milliseconds at p50
(goal, issue 16: <= 5 ms) and the ratio, plus the in-process cost of one evaluation of the
same text. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.gateway_overhead import (  # noqa: E402
    ACCESS_KEY_ID,
    MODEL_NAME,
    SECRET_ACCESS_KEY,
    Run,
    load,
    print_header,
    warm_gateway,
)

REQUEST_CHARS = 2000
GOAL_ADDED_P50_MS = 5.0

_FILLER = (
    "Our team is planning the quarterly review of the support backlog and wants a short summary of the "
    "open tickets, the customers waiting longest, and which fixes shipped in the last release. "
)
_PII = "Contact Jane at jane.doe@example.com or (206) 555-0100; card 4111 1111 1111 1111 was charged twice. "


def text_of(kind: str) -> str:
    body = (_PII + _FILLER * 20) if kind == "pii" else _FILLER * 20
    return body[:REQUEST_CHARS]


def guardrail_request() -> dict[str, object]:
    words = [f"codename{i}" for i in range(15)] + [
        "project zephyr",
        "internal only",
        "do not share",
        "q9 plan",
        "red team",
    ]
    return {
        "name": "bench-guardrail",
        "blockedInputMessaging": "Blocked.",
        "blockedOutputsMessaging": "Blocked.",
        "wordPolicyConfig": {
            "wordsConfig": [{"text": w} for w in words],
            "managedWordListsConfig": [{"type": "PROFANITY"}],
        },
        "sensitiveInformationPolicyConfig": {
            "piiEntitiesConfig": [
                {"type": t, "action": "ANONYMIZE"}
                for t in (
                    "EMAIL",
                    "PHONE",
                    "CREDIT_DEBIT_CARD_NUMBER",
                    "US_SOCIAL_SECURITY_NUMBER",
                    "IP_ADDRESS",
                    "NAME",
                    "ADDRESS",
                    "AWS_ACCESS_KEY",
                )
            ],
            "regexesConfig": [{"name": "ORDER_ID", "pattern": r"ORD-\d{6}", "action": "ANONYMIZE"}],
        },
    }


def in_process_ms(spec_body: dict[str, object], text: str, repeats: int = 200) -> float:
    """p50 of one input evaluation of ``text``, in this process (no HTTP)."""
    from outcrop.guardrails.evaluate import CompiledGuardrail
    from outcrop.guardrails.policy import CreateGuardrailRequest, parse_guardrail_config

    spec = parse_guardrail_config(CreateGuardrailRequest.model_validate(spec_body), None)
    compiled = CompiledGuardrail("bench", "DRAFT", "arn", spec)
    compiled.assess([text], "INPUT")  # build the recognizers once
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        compiled.assess([text], "INPUT")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(args: argparse.Namespace, gateway: str, guardrail_id: str) -> None:
    url = f"{gateway}/model/{MODEL_NAME}/converse"
    print(
        f"{'text':>6} | {'without p50':>11} {'p99':>7} | {'with p50':>9} {'p99':>7} | {'added p50':>9} "
        f"{'ratio':>5} | {'in-process':>10} | goal added p50 <= {GOAL_ADDED_P50_MS:g} ms"
    )
    bodies: dict[str, tuple[bytes, bytes]] = {}
    for kind in ("clean", "pii"):
        plain = {
            "messages": [{"role": "user", "content": [{"text": text_of(kind)}]}],
            "inferenceConfig": {"maxTokens": 3},
        }
        guarded = {
            **plain,
            "guardrailConfig": {"guardrailIdentifier": guardrail_id, "guardrailVersion": "DRAFT"},
        }
        bodies[kind] = (json.dumps(plain).encode(), json.dumps(guarded).encode())
    # Untimed warm-up of both paths (recognizers built, caches filled, connections open).
    for plain_body, guarded_body in bodies.values():
        await load(url, plain_body, 1, args.requests // 2)
        await load(url, guarded_body, 1, args.requests // 2)
    samples: dict[str, tuple[list[float], list[float]]] = {kind: ([], []) for kind in bodies}
    for _ in range(args.rounds):  # alternating sides and texts, so drift hits all four alike
        for kind, (plain_body, guarded_body) in bodies.items():
            samples[kind][0].extend((await load(url, plain_body, 1, args.requests)).latencies_s)
            samples[kind][1].extend((await load(url, guarded_body, 1, args.requests)).latencies_s)
    for kind, (without, with_) in samples.items():
        w, g = Run(without, 1.0), Run(with_, 1.0)
        added = g.pct(0.5) - w.pct(0.5)
        verdict = "met" if added <= GOAL_ADDED_P50_MS else "MISSED"
        local = in_process_ms(guardrail_request(), text_of(kind))
        print(
            f"{kind:>6} | {w.pct(0.5):>9.3f}ms {w.pct(0.99):>5.2f}ms | {g.pct(0.5):>7.3f}ms {g.pct(0.99):>5.2f}ms | "
            f"{added:>7.3f}ms {g.pct(0.5) / w.pct(0.5):>5.2f} | {local:>8.3f}ms | {verdict}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=300, help="Requests per round and side.")
    p.add_argument("--rounds", type=int, default=3, help="Alternating without/with rounds per text.")
    args = p.parse_args()
    print_header()
    with warm_gateway("outcrop-guardrails-bench-") as (gateway, _, _copy):
        import boto3
        from botocore.config import Config

        bedrock = boto3.client(
            "bedrock",
            endpoint_url=gateway,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(retries={"max_attempts": 1}),
        )
        guardrail_id = bedrock.create_guardrail(**guardrail_request())["guardrailId"]
        asyncio.run(measure(args, gateway, guardrail_id))


if __name__ == "__main__":
    main()
