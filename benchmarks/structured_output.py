"""Cost of constrained decoding in a model copy: throughput, grammar compile time, TTFT.

    .venv/bin/python benchmarks/structured_output.py
    .venv/bin/python benchmarks/structured_output.py --seconds 20 --concurrency 32 --hidden 256

One worker process (engine core in its own process) on a generated Qwen2-shaped model, driven
through ``/v1/chat/completions``:

1. throughput at ``--concurrency`` clients sending back to back for ``--seconds`` each:
   every request unconstrained, then every request under a JSON-schema ``response_format``
   (a string field, so both runs generate ``--max-tokens`` tokens per request); completion
   tokens/s of each and their ratio (the goal is >= 0.9x);
2. grammar compile time of a typical tool schema (``tool_choice: required`` over two
   functions), cold and cached, on the API side (``GrammarCompiler``) and in the core
   (``GuidedDecoding.new_matcher``: matcher template + shortest-output measure, then a copy);
3. per-step cost of 32 constrained rows in process (mask computation, unpacking, sampling
   with and without masks): the figure that does not depend on the machine's other load;
4. time to first token (the latency of a one-token answer), one request at a time, with and
   without a constraint (interleaved halves of ``--ttft-requests``, median of each).

Every phase sends prompts no earlier phase sent (no prefix-cache help), and the two kinds
run in interleaved halves. Constrained answers end when their JSON is complete (most a little
before ``--max-tokens``), so the runs do not generate exactly the same work. On a shared
machine the throughput ratio swings with the other load; figure 3 is the steady measure of
what a constraint itself costs.

Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from outcrop.engine.guided import Constraint, GrammarCompiler, GuidedDecoding  # noqa: E402
from outcrop.engine.tools import tool_request  # noqa: E402
from outcrop.testing.tiny_models import build_tiny_model  # noqa: E402
from tests.engine.conftest import WorkerProcess  # noqa: E402

ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 14},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "filters": {"type": "array", "items": {"type": "string"}},
                    "limit": {"type": "integer"},
                },
                "required": ["query"],
            },
        },
    },
]


def body(max_tokens: int, constrained: bool, i: int, stream: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Question number {i}: what is the answer?"}],
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "stream": stream,
    }
    if constrained:
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER}}
    return out


_PHASE = [0]  # every phase asks new questions: no run rides on an earlier run's prefix cache


def _phase() -> int:
    _PHASE[0] += 1
    return _PHASE[0] * 1_000_000


async def throughput(
    base_url: str, concurrency: int, seconds: float, max_tokens: int, constrained: bool
) -> float:
    tokens = 0
    phase = _phase()
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:

        async def user(u: int) -> None:
            nonlocal tokens
            i = 0
            while time.perf_counter() < deadline:
                r = await client.post(
                    "/v1/chat/completions", json=body(max_tokens, constrained, phase + u * 1000 + i)
                )
                r.raise_for_status()
                if constrained:
                    json.loads(r.json()["choices"][0]["message"]["content"])  # it must parse
                tokens += r.json()["usage"]["completion_tokens"]
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(user(u) for u in range(concurrency)))
        return tokens / (time.perf_counter() - started)


async def ttft(base_url: str, requests: int, constrained: bool) -> float:
    """Median latency of a one-token answer: prefill + the first token (+ the grammar's set-up).

    Not the first streamed character: random weights often start with bytes of an incomplete
    UTF-8 character, which the detokenizer holds back, while a constrained answer starts with
    a printable ``{``; that would time the text, not the engine.
    """
    times = []
    phase = _phase()
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        for i in range(requests):
            started = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body(1, constrained, phase + i))
            r.raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def compile_times(model_dir: Path) -> dict[str, float]:
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tools = tool_request(json.loads(json.dumps(TOOLS)), "required", None)
    assert tools is not None
    constraint: Constraint = tools.constraint()
    compiler = GrammarCompiler(tok, len(tok))
    compiler.compile(Constraint("json", json.dumps(ANSWER)))  # one-time set-up (tokenizer, meta-schema)
    cold = compiler.compile(constraint)
    started = time.perf_counter()
    cached = compiler.compile(constraint)
    cached_s = time.perf_counter() - started
    core = GuidedDecoding(tok, len(tok), 4, torch.device("cpu"), {tok.eos_token_id})
    core.new_matcher(compiler.compile(Constraint("regex", "a")).grammar)  # tokenizer conversion
    started = time.perf_counter()
    core.new_matcher(cold.grammar)
    core_cold = time.perf_counter() - started
    started = time.perf_counter()
    core.new_matcher(cold.grammar)
    core_cached = time.perf_counter() - started
    core.close()
    return {
        "api_cold_ms": cold.compile_seconds * 1e3,
        "api_cached_ms": cached_s * 1e3,
        "core_cold_ms": core_cold * 1e3,
        "core_cached_ms": core_cached * 1e3,
        "cached_flag": float(cached.cached),
    }


def mask_cost(model_dir: Path, rows: int = 32, steps: int = 200) -> dict[str, float]:
    """Per-step cost of constraining ``rows`` rows, in process: the masks (computed on the helper
    thread while the forward runs), their unpacking, and the sampler with and without them."""
    import torch
    from transformers import AutoTokenizer

    from outcrop.engine.sampling import Sampler, SamplingParams, TokenCounts

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = len(tok)
    grammar = GrammarCompiler(tok, vocab).compile(Constraint("json", json.dumps(ANSWER))).grammar
    guided = GuidedDecoding(tok, vocab, rows, torch.device("cpu"), {tok.eos_token_id})
    matchers = []
    for slot in range(rows):  # each row in the middle of a JSON string
        matcher, _ = guided.new_matcher(grammar)
        for token in tok.encode('{"answer": "hello wor', add_special_tokens=False):
            assert matcher.consume_token(token)
        matchers.append((matcher, slot))

    def per_step(fn: Any) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - started) / steps * 1e3

    fill = per_step(lambda: guided.start_masks(matchers).result())  # type: ignore[union-attr]
    slots = list(range(rows))
    allowed = guided.allowed(slots)
    unpack = per_step(lambda: guided.allowed(slots))
    sampler, counts = Sampler(vocab, torch.device("cpu")), TokenCounts(rows, vocab, torch.device("cpu"))
    logits, params = torch.randn(rows, vocab), [SamplingParams(temperature=1.0) for _ in slots]
    plain = per_step(lambda: sampler.sample(logits, slots, params, counts))
    masked = per_step(lambda: sampler.sample(logits, slots, params, counts, (slots, allowed)))
    guided.close()
    return {
        "vocab": vocab,
        "fill_ms": fill,
        "unpack_ms": unpack,
        "sample_ms": plain,
        "masked_sample_ms": masked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0, help="Per throughput run.")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64, help="Model width (64: the tests' tiny model).")
    parser.add_argument("--ttft-requests", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(
            Path(tmp) / "model", family="qwen2", hidden_size=args.hidden, intermediate_size=args.hidden * 2
        )
        times = compile_times(model)
        print(
            "grammar compile, tool schema (required over 2 functions): "
            f"API side cold {times['api_cold_ms']:.2f} ms, cached {times['api_cached_ms']:.3f} ms; "
            f"core cold {times['core_cold_ms']:.2f} ms, cached {times['core_cached_ms']:.3f} ms"
        )
        cost = mask_cost(model)
        print(
            f"per step, {args.concurrency} constrained rows (vocab {cost['vocab']:.0f}): masks "
            f"{cost['fill_ms']:.3f} ms (helper thread, overlaps the forward), unpack {cost['unpack_ms']:.3f} ms, "
            f"sampling {cost['sample_ms']:.3f} ms unmasked vs {cost['masked_sample_ms']:.3f} ms masked"
        )
        worker = WorkerProcess(model, "--max-batch", str(args.concurrency), "--max-model-len", "1024")
        try:
            worker.wait_ready(120)
            url = worker.base_url
            asyncio.run(throughput(url, 4, 2.0, args.max_tokens, True))  # warm-up: both paths, grammar cached
            asyncio.run(throughput(url, 4, 2.0, args.max_tokens, False))
            # Interleaved halves, so drifting load on a shared machine hits both alike.
            plain = guided = 0.0
            for _ in range(2):
                plain += (
                    asyncio.run(throughput(url, args.concurrency, args.seconds / 2, args.max_tokens, False))
                    / 2
                )
                guided += (
                    asyncio.run(throughput(url, args.concurrency, args.seconds / 2, args.max_tokens, True))
                    / 2
                )
            print(
                f"throughput at concurrency {args.concurrency}, {args.max_tokens} new tokens: "
                f"unconstrained {plain:.0f} tok/s, JSON-schema constrained {guided:.0f} tok/s, "
                f"ratio {guided / plain:.2f}x"
            )
            t_plain = t_guided = 0.0
            for _ in range(2):  # interleaved halves, as above
                t_plain += asyncio.run(ttft(url, args.ttft_requests // 2, False)) / 2
                t_guided += asyncio.run(ttft(url, args.ttft_requests // 2, True)) / 2
            print(
                f"TTFT (one-token answers; mean of two medians of {args.ttft_requests // 2}, one at a time): unconstrained {t_plain * 1e3:.1f} ms, "
                f"constrained {t_guided * 1e3:.1f} ms"
            )
        finally:
            worker.stop()


if __name__ == "__main__":
    main()
