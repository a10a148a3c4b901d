"""The hand-written forward over the paged KV cache must match transformers' own forward and
generate, for every family (and a sliding window)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from outcrop.engine.engine import EngineRequest
from outcrop.engine.kv_cache import KVCache, kv_bytes_per_token, plan_kv_cache
from outcrop.engine.model_runner import ModelRunner, StepBatch
from outcrop.testing.tiny_models import build_tiny_model
from tests.engine.conftest import FAMILIES, greedy, make_runtime, run_engine, tokens_of

PROMPTS = [
    "Hello, world! How are",
    "你好，世界！今天",
    "The quick brown fox jumps over the lazy dog. Once upon a time there was",
]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_output_matches_transformers_generate(tiny_models: dict[str, Path], family: str) -> None:
    runtime = make_runtime(tiny_models[family], max_batch=4)
    engine = runtime.engine
    assert engine is not None and runtime.tokenizer is not None
    prompts = [runtime.tokenizer.encode(p) for p in PROMPTS]
    expected = []
    model = engine.runner.model
    for ids in prompts:
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0
            )
        expected.append(out[0, len(ids) :].tolist())
    # All three run together in one batch (batched prefill + batched decode).
    outs = run_engine(engine, [EngineRequest(f"r{i}", ids, greedy(16)) for i, ids in enumerate(prompts)])
    assert [tokens_of(outs[f"r{i}"]) for i in range(3)] == expected


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_greedy_output_is_the_same_alone_and_inside_a_busy_batch(
    tiny_models: dict[str, Path], family: str
) -> None:
    # A tiny prefill budget forces chunked prefill; other rows use random sampling and penalties.
    runtime = make_runtime(tiny_models[family], max_batch=6, max_prefill_tokens=8)
    engine = runtime.engine
    assert engine is not None and runtime.tokenizer is not None
    target = runtime.tokenizer.encode("Once upon a time there was a little model that wanted")
    alone = tokens_of(run_engine(engine, [EngineRequest("alone", target, greedy(24))])["alone"])

    # Busy: three sequences are already decoding when the target arrives; two more arrive after it.
    for i, text in enumerate(["SELECT name", "def add(a, b):\n    return a + b", "😀 🚀 🎉"]):
        ids = runtime.tokenizer.encode(text)
        params = greedy(40, temperature=0.9, top_p=0.9, top_k=20, seed=i, repetition_penalty=1.3)
        engine.add_request(EngineRequest(f"early{i}", ids, params))
    for _ in range(4):
        engine.step()
    engine.add_request(EngineRequest("busy", target, greedy(24)))
    collected: list[int] = []
    late_added = False
    for _ in range(500):
        for request, out in engine.step():
            if request.request_id == "busy":
                collected += out.token_ids
        if not late_added:
            late_added = True
            for i, text in enumerate(
                ["你好，世界！", "Hello, world! How are you today? I am fine, thank you."]
            ):
                ids = runtime.tokenizer.encode(text)
                engine.add_request(EngineRequest(f"late{i}", ids, greedy(10, presence_penalty=0.5)))
        if not engine.running and not engine.waiting:
            break
    assert collected == alone


def test_batch_sequences_pause_for_online_ones_and_their_greedy_output_is_unchanged(
    tiny_models: dict[str, Path],
) -> None:
    runtime = make_runtime(tiny_models["llama"], max_batch=6, max_lower_priority_seqs=1)
    engine = runtime.engine
    assert engine is not None and runtime.tokenizer is not None
    texts = ["Once upon a time", "SELECT name FROM", "def add(a, b):", "Hello, world! How"]
    ids = [runtime.tokenizer.encode(t) for t in texts]
    alone = {
        f"b{i}": tokens_of(run_engine(engine, [EngineRequest(f"b{i}", p, greedy(20))])[f"b{i}"])
        for i, p in enumerate(ids[:3])
    }
    online_alone = tokens_of(run_engine(engine, [EngineRequest("o", ids[3], greedy(12))])["o"])

    for i, p in enumerate(ids[:3]):
        engine.add_request(EngineRequest(f"b{i}", p, greedy(20), priority=10))
    collected: dict[str, list[int]] = {name: [] for name in [*alone, "o"]}
    for _ in range(3):  # the batch sequences are decoding when the online one arrives
        for req, out in engine.step():
            collected[req.request_id] += out.token_ids
    engine.add_request(EngineRequest("o", ids[3], greedy(12)))
    rows_beside_online: list[int] = []
    for _ in range(500):
        online_running = any(s.request.request_id == "o" for s in engine.running.values())
        stepped = engine.step()
        produced = [req.request_id for req, out in stepped if out.token_ids]
        if online_running and "o" in produced:
            rows_beside_online.append(len(produced) - 1)
        for req, out in stepped:
            collected[req.request_id] += out.token_ids
        if not engine.running and not engine.waiting:
            break
    assert rows_beside_online and max(rows_beside_online) <= 1  # the other batch rows paused
    assert collected == {**alone, "o": online_alone}


def test_an_online_request_takes_the_slot_of_a_batch_sequence_that_has_not_started(
    tiny_models: dict[str, Path],
) -> None:
    runtime = make_runtime(tiny_models["llama"], max_batch=3, max_lower_priority_seqs=1)
    engine = runtime.engine
    assert engine is not None and runtime.tokenizer is not None
    ids = {name: runtime.tokenizer.encode(text) for name, text in [("o1", "Once upon"), ("o2", "SELECT")]}
    ids |= {"b1": runtime.tokenizer.encode("def add(a, b):"), "b2": runtime.tokenizer.encode("Hello, world")}
    alone = {n: tokens_of(run_engine(engine, [EngineRequest(n, p, greedy(16))])[n]) for n, p in ids.items()}

    engine.add_request(EngineRequest("o1", ids["o1"], greedy(16)))
    outputs = engine.step()
    for name in ("b1", "b2"):
        engine.add_request(EngineRequest(name, ids[name], greedy(16), priority=10))
    outputs += engine.step()  # b1 runs beside o1; b2 holds the last slot, paused before its prefill
    assert [s.request.request_id for s in engine.running.values()] == ["o1", "b1", "b2"]
    engine.add_request(EngineRequest("o2", ids["o2"], greedy(16)))
    outputs += engine.step()
    assert sorted(s.request.request_id for s in engine.running.values()) == ["b1", "o1", "o2"]
    assert [s.request.request_id for s in engine.waiting] == ["b2"]
    collected: dict[str, list[int]] = {name: [] for name in ids}
    for req, out in outputs:
        collected[req.request_id] += out.token_ids
    for _ in range(500):
        for req, out in engine.step():
            collected[req.request_id] += out.token_ids
        if not engine.running and not engine.waiting:
            break
    assert collected == alone


def test_bfloat16_generation_runs_and_stays_in_vocabulary(tiny_models: dict[str, Path]) -> None:
    runtime = make_runtime(tiny_models["qwen2"], max_batch=2, dtype="bfloat16")
    engine = runtime.engine
    assert engine is not None and runtime.tokenizer is not None
    assert engine.runner.kv is not None and engine.runner.kv.keys[0].dtype == torch.bfloat16
    outs = run_engine(engine, [EngineRequest("b", runtime.tokenizer.encode("Hello"), greedy(8))])["b"]
    tokens = tokens_of(outs)
    assert len(tokens) == 8 and all(0 <= t < engine.runner.vocab_size for t in tokens)


# ---------------------------------------------------------------- paged attention vs a dense reference


def _paged_runner(model_dir: Path, block_size: int, num_blocks: int) -> ModelRunner:
    runner = ModelRunner.load(model_dir, torch.device("cpu"), torch.float32)
    per_token = kv_bytes_per_token(runner.num_layers, runner.num_kv_heads, runner.head_dim, torch.float32)
    plan = plan_kv_cache((num_blocks + 1) * block_size * per_token, per_token, 256, block_size)
    runner.attach_cache(
        KVCache(plan, runner.num_layers, runner.num_kv_heads, runner.head_dim, torch.float32, runner.device)
    )
    return runner


def _dense_logits(runner: ModelRunner, ids: list[int]) -> torch.Tensor:
    """transformers' own forward over the whole sequence: logits at every position, [len, vocab]."""
    with torch.inference_mode():
        return runner.model(torch.tensor([ids])).logits[0]


@pytest.fixture(scope="module")
def windowed_mistral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Mistral whose sliding window (8) is far shorter than the test sequences."""
    return build_tiny_model(
        tmp_path_factory.mktemp("windowed") / "mistral", family="mistral", extra_config={"sliding_window": 8}
    )


@pytest.fixture(scope="module")
def windowed_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2 whose window (8) applies only from layer 1 on (``max_window_layers``), as transformers does."""
    return build_tiny_model(
        tmp_path_factory.mktemp("windowed") / "qwen2",
        family="qwen2",
        extra_config={"sliding_window": 8, "use_sliding_window": True, "max_window_layers": 1},
    )


@pytest.mark.parametrize("family", [*FAMILIES, "mistral-window-8", "qwen2-window-8-from-layer-1"])
def test_paged_attention_matches_a_dense_forward_in_chunks_and_decode_steps(
    tiny_models: dict[str, Path], windowed_mistral: Path, windowed_qwen2: Path, family: str
) -> None:
    model_dir = {"mistral-window-8": windowed_mistral, "qwen2-window-8-from-layer-1": windowed_qwen2}.get(
        family
    ) or tiny_models[family]
    bs = 4
    runner = _paged_runner(model_dir, block_size=bs, num_blocks=40)
    if family == "mistral-window-8":
        assert set(runner.layer_windows) == {8}
    if family == "qwen2-window-8-from-layer-1":
        assert runner.layer_windows[0] is None and set(runner.layer_windows[1:]) == {8}
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, runner.vocab_size, (n,), generator=g).tolist() for n in (29, 18)]
    # Block tables out of order and interleaved, as a busy pool hands them out.
    order = torch.randperm(40, generator=g).tolist()
    tables = [order[0:8], order[8:13]]
    expected = [_dense_logits(runner, s) for s in seqs]

    # Prefill the prompts (all but the last 4 tokens) in chunks of 7, both rows in one batch.
    prompt_lens = [len(s) - 4 for s in seqs]
    done = [0, 0]
    while any(d < p for d, p in zip(done, prompt_lens, strict=True)):
        rows = [i for i in range(2) if done[i] < prompt_lens[i]]
        chunks = [seqs[i][done[i] : min(done[i] + 7, prompt_lens[i])] for i in rows]
        logits = runner.forward(StepBatch(chunks, [tables[i] for i in rows], [done[i] for i in rows]))
        for row, i in enumerate(rows):
            done[i] += len(chunks[row])
            torch.testing.assert_close(logits[row], expected[i][done[i] - 1], atol=1e-4, rtol=1e-4)
    # Then decode the last 4 tokens one step at a time, both rows in each step.
    for step in range(4):
        positions = [p + step for p in prompt_lens]
        logits = runner.forward(
            StepBatch([[s[p]] for s, p in zip(seqs, positions, strict=True)], tables, positions)
        )
        for i in range(2):
            torch.testing.assert_close(logits[i], expected[i][positions[i]], atol=1e-4, rtol=1e-4)
