"""Gateway-side tokenizers of imported models, for count-tokens and token-rate limits.

Loaded from the model's verified folder (``tokenizer.json`` and friends: data, never code;
chat templates render in transformers' sandboxed Jinja environment). No copy needs to run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from outcrop.errors import InvalidRequestError, ModelNotChatCapableError
from outcrop.registry.service import Registry

# A tokenizer takes a few MB; eight covers the models a gateway is actively serving.
MAX_CACHED_TOKENIZERS = 8


class TokenizerCache:
    def __init__(self, registry: Registry, max_entries: int = MAX_CACHED_TOKENIZERS) -> None:
        self.registry = registry
        self.max_entries = max_entries
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> Any:
        with self._lock:
            if model_id in self._cache:
                self._cache.move_to_end(model_id)
                return self._cache[model_id]
        from transformers import AutoTokenizer

        folder = self.registry.model_folder(model_id)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
        with self._lock:
            self._cache[model_id] = tokenizer
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return tokenizer

    def count_prompt(self, model_id: str, prompt: str) -> int:
        return len(self.get(model_id)(prompt, add_special_tokens=True)["input_ids"])

    def count_messages(self, model_id: str, messages: list[dict[str, Any]]) -> int:
        tokenizer = self.get(model_id)
        if not getattr(tokenizer, "chat_template", None):
            raise ModelNotChatCapableError(model_id)
        try:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        except Exception as exc:
            raise InvalidRequestError(
                f"The messages cannot be rendered with the model's chat template: {exc}"
            ) from None
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)
