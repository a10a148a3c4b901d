"""The API side's output processing: token ids from the core -> text, stop strings, held outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from outcrop.engine.messages import CoreOutput, EngineRequest
from outcrop.engine.metrics import EngineMetrics
from outcrop.engine.output_processor import OutputProcessor
from outcrop.engine.tokenization import ModelTokenizer
from tests.engine.conftest import greedy


@pytest.fixture(scope="module")
def tokenizer(tiny_models: dict[str, Path]) -> ModelTokenizer:
    return ModelTokenizer(tiny_models["llama"], "m")


def _processor(tokenizer: ModelTokenizer) -> OutputProcessor:
    return OutputProcessor(tokenizer.tokenizer, tokenizer.eos_token_ids, EngineMetrics())


def test_streamed_token_ids_become_the_same_text_as_one_decode(tokenizer: ModelTokenizer) -> None:
    ids = tokenizer.encode("Hello, world! 你好，世界！😀")
    proc = _processor(tokenizer)
    proc.add(EngineRequest("r", [1], greedy(len(ids))))
    text = ""
    for i, token in enumerate(ids):
        last = i == len(ids) - 1
        step = proc.process([CoreOutput("r", [token], finish_reason="length" if last else None)])
        text += "".join(out.text for _, out in step.outputs)
    assert text == tokenizer.tokenizer.decode(ids, skip_special_tokens=True)
    assert proc.num_unfinished == 0


def test_a_stop_string_finishes_the_request_asks_the_core_to_abort_and_drops_later_tokens(
    tokenizer: ModelTokenizer,
) -> None:
    ids = tokenizer.encode("one two three four five")
    proc = _processor(tokenizer)
    proc.add(EngineRequest("r", [1], greedy(50, stop=["three"])))
    outputs, aborts = [], []
    for token in ids:
        step = proc.process([CoreOutput("r", [token])])
        outputs += [out for _, out in step.outputs]
        aborts += step.aborts
    assert aborts == ["r"]
    assert outputs[-1].finished and outputs[-1].finish_reason == "stop"
    assert "".join(o.text for o in outputs) == "one two "
    assert [o for o in outputs if o.finished] == [outputs[-1]]  # tokens after the hit are dropped


def test_a_held_request_gets_one_output_when_it_finishes(tokenizer: ModelTokenizer) -> None:
    ids = tokenizer.encode("Hello there")
    proc = _processor(tokenizer)
    proc.add(EngineRequest("r", [1], greedy(len(ids)), stream=False))
    delivered = []
    for i, token in enumerate(ids):
        reason = "length" if i == len(ids) - 1 else None
        delivered += proc.process([CoreOutput("r", [token], finish_reason=reason)]).outputs
    assert len(delivered) == 1
    out = delivered[0][1]
    assert out.token_ids == ids and out.text == "Hello there" and out.completion_tokens == len(ids)


def test_a_core_error_reaches_the_request_and_other_rows_carry_on(tokenizer: ModelTokenizer) -> None:
    proc = _processor(tokenizer)
    proc.add(EngineRequest("bad", [1], greedy(5)))
    proc.add(EngineRequest("good", [1], greedy(5)))
    token = tokenizer.encode("Hi")[0]
    step = proc.process([CoreOutput("bad", [], [], "error", "its seed", True), CoreOutput("good", [token])])
    by_id = {req.request_id: out for req, out in step.outputs}
    assert by_id["bad"].error == "its seed" and by_id["bad"].error_is_request and by_id["bad"].finished
    assert by_id["good"].token_ids == [token] and not by_id["good"].finished


def test_when_the_core_dies_every_unfinished_request_ends_with_an_engine_error(
    tokenizer: ModelTokenizer,
) -> None:
    proc = _processor(tokenizer)
    for name in ("a", "b"):
        proc.add(EngineRequest(name, [1], greedy(5)))
    outs = proc.fail_all("the core died")
    assert sorted(req.request_id for req, _ in outs) == ["a", "b"]
    assert all(o.finished and o.error == "the core died" and not o.error_is_request for _, o in outs)
    assert proc.num_unfinished == 0
