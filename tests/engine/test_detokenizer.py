from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from outcrop.engine.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer

TEXTS = [
    "你好，世界！今天天气很好。",
    "Emoji test: 😀 🚀 🎉 👍 ❤️ 🌍 and more 🤖🧠.",
    "mixed 机器学习 🚀 done",
]


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_rebuild_the_text_without_half_characters(tiny_models: dict[str, Path], text: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models["llama"]))
    ids = tokenizer.encode(text, add_special_tokens=False)
    # Byte-level BPE splits these characters over several tokens, so some prefixes are partial.
    assert any(REPLACEMENT_CHAR in tokenizer.decode(ids[:i]) for i in range(1, len(ids)))
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(t) for t in ids] + [detok.flush()]
    assert all(REPLACEMENT_CHAR not in d for d in deltas)
    assert "".join(deltas) == text == detok.text


def test_flush_emits_trailing_invalid_bytes_as_replacement(tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models["llama"]))
    ids = tokenizer.encode("好", add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer)
    partial = [detok.push(t) for t in ids[:-1]]
    if len(ids) > 1:
        assert "".join(partial) == ""
        assert detok.flush().startswith(REPLACEMENT_CHAR)
