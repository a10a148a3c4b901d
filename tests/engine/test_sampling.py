from __future__ import annotations

import torch

from outcrop.engine.sampling import Sampler, SamplingParams, TokenCounts

VOCAB = 50


def _sampler() -> tuple[Sampler, TokenCounts]:
    return Sampler(VOCAB, torch.device("cpu")), TokenCounts(4, VOCAB, torch.device("cpu"))


def _logits(rows: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(rows, VOCAB) * 3


def test_greedy_rows_take_the_argmax_and_random_rows_sample_in_the_same_batch() -> None:
    sampler, counts = _sampler()
    logits = _logits(3)
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.0),
    ]
    result = sampler.sample(logits, [0, 1, 2], params, counts)
    assert result.token_ids[0] == int(logits[0].argmax())
    assert result.token_ids[2] == int(logits[2].argmax())


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    sampler, counts = _sampler()
    logits = _logits(2)
    params = [SamplingParams(temperature=1.5, top_k=1), SamplingParams(temperature=1.5, top_p=1e-6)]
    for _ in range(5):
        result = sampler.sample(logits, [0, 1], params, counts)
        assert result.token_ids == logits.argmax(-1).tolist()


def test_top_k_only_draws_from_the_k_best() -> None:
    sampler, counts = _sampler()
    logits = _logits(1)
    allowed = set(logits[0].topk(3).indices.tolist())
    drawn = {
        sampler.sample(logits, [0], [SamplingParams(temperature=2.0, top_k=3)], counts).token_ids[0]
        for _ in range(50)
    }
    assert drawn <= allowed and len(drawn) > 1


def test_a_seeded_slot_repeats_its_draws() -> None:
    sampler, counts = _sampler()
    logits = _logits(1)
    draws = []
    for _ in range(2):
        sampler.seed_slot(0, 1234)
        draws.append(
            [sampler.sample(logits, [0], [SamplingParams()], counts).token_ids[0] for _ in range(10)]
        )
    assert draws[0] == draws[1]


def test_penalties_push_repeated_tokens_down() -> None:
    sampler, counts = _sampler()
    logits = torch.zeros(1, VOCAB)
    logits[0, 5] = 2.0
    logits[0, 6] = 1.9
    counts.start(0, [5], track=True)  # token 5 is in the prompt
    rep = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    assert sampler.sample(logits, [0], [rep], counts).token_ids == [6]
    counts.start(0, [], track=True)
    freq = SamplingParams(temperature=0.0, frequency_penalty=1.0)
    assert sampler.sample(logits, [0], [freq], counts).token_ids == [5]  # not yet in the output
    assert sampler.sample(logits, [0], [freq], counts).token_ids == [6]  # now it is, once
