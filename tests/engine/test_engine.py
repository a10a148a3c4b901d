"""Engine behaviour without HTTP: stop conditions, aborts, seeds, admission."""

from __future__ import annotations

from pathlib import Path

from outcrop.engine.engine import EngineRequest
from outcrop.engine.runtime import WorkerRuntime
from outcrop.engine.sampling import SamplingParams
from tests.engine.conftest import greedy, make_runtime, run_engine, tokens_of


def _prompt(runtime: WorkerRuntime, text: str = "Hello, world! How are") -> list[int]:
    assert runtime.tokenizer is not None
    return runtime.tokenizer.encode(text)


def _text(outs: list) -> str:
    return "".join(o.text for o in outs)


def test_max_tokens_ends_with_length_and_counts_usage(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    prompt = _prompt(llama_runtime)
    outs = run_engine(engine, [EngineRequest("a", prompt, greedy(7))])["a"]
    assert outs[-1].finish_reason == "length"
    assert outs[-1].completion_tokens == 7 == len(tokens_of(outs))
    assert outs[-1].prompt_tokens == len(prompt)


def test_stop_string_ends_generation_and_is_not_returned(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    prompt = _prompt(llama_runtime)
    full = _text(run_engine(engine, [EngineRequest("full", prompt, greedy(30))])["full"])
    stop = full[10:13]
    cut = full.index(stop)
    outs = run_engine(engine, [EngineRequest("s", prompt, greedy(30, stop=[stop, "never-there"]))])["s"]
    assert outs[-1].finish_reason == "stop"
    assert _text(outs) == full[:cut]


def test_eos_ends_generation_unless_ignore_eos(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    eos = next(iter(engine.eos_token_ids))
    prompt = _prompt(llama_runtime)
    forced = greedy(10, ignore_eos=False, logit_bias={eos: 100.0})
    outs = run_engine(engine, [EngineRequest("e", prompt, forced)])["e"]
    assert outs[-1].finish_reason == "stop"
    assert outs[-1].completion_tokens == 1
    ignored = greedy(5, ignore_eos=True, logit_bias={eos: 100.0})
    outs = run_engine(engine, [EngineRequest("i", prompt, ignored)])["i"]
    assert (outs[-1].finish_reason, outs[-1].completion_tokens) == ("length", 5)


def test_abort_frees_the_slot_at_the_next_step(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    engine.add_request(EngineRequest("long", _prompt(llama_runtime), greedy(200)))
    for _ in range(3):
        engine.step()
    assert len(engine.running) == 1
    engine.abort("long")
    outputs = engine.step()
    assert [(r.request_id, o.finish_reason) for r, o in outputs] == [("long", "abort")]
    assert not engine.running and sorted(engine.free_slots) == list(range(engine.num_slots))


def test_requests_beyond_the_slots_wait_and_then_run(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    prompt = _prompt(llama_runtime)
    requests = [EngineRequest(f"q{i}", prompt, greedy(4)) for i in range(engine.num_slots + 3)]
    for r in requests:
        engine.add_request(r)
    engine.step()
    assert len(engine.running) == engine.num_slots and len(engine.waiting) == 3
    finished = []
    while engine.running or engine.waiting:
        finished += [r.request_id for r, o in engine.step() if o.finished]
    assert sorted(finished) == sorted(r.request_id for r in requests)


def test_same_seed_same_text_different_seed_different_text(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    prompt = _prompt(llama_runtime)

    def sample(seed: int, request_id: str) -> list[int]:
        params = SamplingParams(max_tokens=20, temperature=1.0, seed=seed, ignore_eos=True)
        return tokens_of(run_engine(engine, [EngineRequest(request_id, prompt, params)])[request_id])

    first = sample(7, "a")
    # The same seed inside a batch with other random rows still gives the same tokens.
    noisy = [EngineRequest(f"n{i}", prompt, SamplingParams(max_tokens=20, temperature=1.0)) for i in range(3)]
    params = SamplingParams(max_tokens=20, temperature=1.0, seed=7, ignore_eos=True)
    batched = run_engine(engine, [*noisy, EngineRequest("b", prompt, params)])["b"]
    assert tokens_of(batched) == first
    assert sample(8, "c") != first


def test_logprobs_are_returned_per_token(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    outs = run_engine(engine, [EngineRequest("l", _prompt(llama_runtime), greedy(5, logprobs=3))])["l"]
    entries = [e for o in outs for e in o.logprobs]
    assert len(entries) == 5
    for e in entries:
        assert len(e.top) == 3
        assert e.top[0][0] == e.token_id  # greedy: the chosen token is the most likely one
        assert e.logprob <= 0.0


def test_a_seed_torch_refuses_fails_that_request_alone(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    prompt = _prompt(llama_runtime)
    bad = SamplingParams(max_tokens=7, temperature=1.0, seed=2**80)  # past the HTTP edge's int64 check
    outs = run_engine(
        engine,
        [
            EngineRequest("good-greedy", prompt, greedy(7)),
            EngineRequest("bad-seed", prompt, bad),
            EngineRequest("good-seeded", prompt, greedy(7, temperature=1.0, seed=3)),
        ],
    )
    failed = outs["bad-seed"][-1]
    assert failed.finish_reason == "error" and failed.error_is_request
    assert failed.error is not None and "seed=" + str(2**80) in failed.error
    for good in ("good-greedy", "good-seeded"):
        assert outs[good][-1].finish_reason == "length" and outs[good][-1].error is None
        assert len(tokens_of(outs[good])) == 7
    assert not engine.running and not engine.waiting  # the failed one gave its slot back


def test_a_row_the_sampler_cannot_serve_fails_alone_and_the_batch_goes_on(
    llama_runtime: WorkerRuntime,
) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    prompt = _prompt(llama_runtime)
    too_many_logprobs = greedy(7, logprobs=engine.runner.vocab_size + 1)  # topk past the vocabulary
    alone = run_engine(engine, [EngineRequest("alone", prompt, greedy(7, logprobs=2))])["alone"]
    outs = run_engine(
        engine,
        [
            EngineRequest("good", prompt, greedy(7, logprobs=2)),
            EngineRequest("bad", prompt, too_many_logprobs),
            EngineRequest("good-penalized", prompt, greedy(7, frequency_penalty=1.0)),
        ],
    )
    assert outs["bad"][-1].finish_reason == "error" and outs["bad"][-1].error_is_request
    assert "sampling" in (outs["bad"][-1].error or "")
    assert tokens_of(outs["good"]) == tokens_of(alone)  # the retried row samples what it would have
    assert [len(o.logprobs) for o in outs["good"]] == [1] * 7
    assert len(tokens_of(outs["good-penalized"])) == 7


# ---------------------------------------------------------------- paged KV cache and prefix caching


def test_a_prefix_cache_hit_gives_the_same_greedy_output_and_skips_the_prefix(
    tiny_models: dict[str, Path],
) -> None:
    runtime = make_runtime(tiny_models["llama"], max_batch=4)
    engine = runtime.engine
    assert engine is not None
    prefix = _prompt(runtime, "You are a helpful assistant. Answer briefly and kindly. " * 3)
    cold = tokens_of(run_engine(engine, [EngineRequest("cold", [*prefix, 7, 8, 9], greedy(12))])["cold"])
    queries, hits = _prefix_counters(runtime)
    forwarded: list[int] = []  # tokens each forward computed
    real_forward = engine.runner.forward
    engine.runner.forward = lambda batch: (
        forwarded.append(sum(map(len, batch.token_ids))) or real_forward(batch)
    )  # type: ignore[method-assign]
    try:
        warm = tokens_of(run_engine(engine, [EngineRequest("warm", [*prefix, 7, 8, 9], greedy(12))])["warm"])
    finally:
        engine.runner.forward = real_forward  # type: ignore[method-assign]
    queries2, hits2 = _prefix_counters(runtime)
    assert warm == cold
    block = engine.blocks.block_size
    assert queries2 - queries == len(prefix) + 3
    assert hits2 - hits == (len(prefix) + 3 - 1) // block * block  # every full block but the last token's
    assert forwarded[0] == len(prefix) + 3 - (hits2 - hits)  # the prefill computed only the rest
    # A different continuation of the same prefix hits too, and is right (alone on a fresh engine).
    other = [*prefix, 11, 12]
    hit = tokens_of(run_engine(engine, [EngineRequest("other", other, greedy(12))])["other"])
    fresh = make_runtime(tiny_models["llama"], max_batch=4, prefix_caching=False).engine
    assert fresh is not None
    assert hit == tokens_of(run_engine(fresh, [EngineRequest("other", other, greedy(12))])["other"])


def _prefix_counters(runtime: WorkerRuntime) -> tuple[float, float]:
    m = runtime.metrics
    return m.prefix_cache_queries._value.get(), m.prefix_cache_hits._value.get()


def test_sequences_preempted_when_blocks_run_out_resume_with_the_same_tokens(
    tiny_models: dict[str, Path],
) -> None:
    # 9 blocks of 16 tokens; three sequences of ~75 tokens need 15: decoding must preempt and recompute.
    runtime = make_runtime(tiny_models["llama"], max_batch=4, kv_cache_bytes=10 * 16 * 512)
    engine = runtime.engine
    assert engine is not None and engine.blocks.num_blocks == 9
    prompts = [_prompt(runtime, t) for t in ("Once upon a time", "SELECT name FROM", "def add(a, b):")]
    params = [greedy(64), greedy(64, temperature=1.0, seed=5, frequency_penalty=0.5), greedy(64)]
    alone = [
        tokens_of(run_engine(engine, [EngineRequest(f"a{i}", p, sp)])[f"a{i}"])
        for i, (p, sp) in enumerate(zip(prompts, params, strict=True))
    ]
    preemptions = runtime.metrics.preemptions._value.get()
    together = run_engine(
        engine, [EngineRequest(f"t{i}", p, sp) for i, (p, sp) in enumerate(zip(prompts, params, strict=True))]
    )
    assert runtime.metrics.preemptions._value.get() > preemptions
    assert [tokens_of(together[f"t{i}"]) for i in range(3)] == alone
    assert engine.blocks.num_free == engine.blocks.num_blocks  # nothing leaked


def test_finished_and_aborted_sequences_give_their_blocks_back(llama_runtime: WorkerRuntime) -> None:
    engine = llama_runtime.engine
    assert engine is not None
    prompt = _prompt(llama_runtime)
    engine.add_request(EngineRequest("long", prompt, greedy(200)))
    engine.add_request(EngineRequest("short", prompt, greedy(20)))
    engine.step()
    while any(s.request.request_id == "short" for s in [*engine.running.values(), *engine.waiting]):
        engine.step()
    assert engine.blocks.tables and engine.blocks.num_used > 0  # "long" still holds its blocks
    engine.abort("long")
    engine.step()
    assert engine.blocks.num_free == engine.blocks.num_blocks and not engine.blocks.tables
