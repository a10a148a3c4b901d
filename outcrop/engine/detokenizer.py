"""Incremental detokenization that never emits half a UTF-8 character.

Byte-level BPE tokens can end in the middle of a multi-byte character (Chinese, emoji);
decoding such a prefix yields U+FFFD. Each step decodes a short window of recent tokens
twice (with and without the newest one) and emits only the stable difference; text that
still ends in U+FFFD is held back until the following token completes the character.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any) -> None:
        # The Rust tokenizer: decode() there skips the Python wrapper's overhead.
        self._decode = tokenizer.backend_tokenizer.decode
        self.token_ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""

    def push(self, token_id: int) -> str:
        """Add one token; return the newly complete text (possibly empty)."""
        self.token_ids.append(token_id)
        prefix_text = self._decode(
            self.token_ids[self._prefix_offset : self._read_offset], skip_special_tokens=True
        )
        new_text = self._decode(self.token_ids[self._prefix_offset :], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            delta = new_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.token_ids)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """At the end of generation: emit whatever is held back (invalid bytes stay U+FFFD)."""
        if self._read_offset >= len(self.token_ids):
            return ""
        prefix_text = self._decode(
            self.token_ids[self._prefix_offset : self._read_offset], skip_special_tokens=True
        )
        new_text = self._decode(self.token_ids[self._prefix_offset :], skip_special_tokens=True)
        self._read_offset = len(self.token_ids)
        delta = new_text[len(prefix_text) :] if new_text.startswith(prefix_text) else ""
        self.text += delta
        return delta
