"""The model's tokenizer, chat template and end-of-sequence ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from outcrop.engine.tools import parser_for, template_supports_tools
from outcrop.errors import InvalidRequestError, ModelNotChatCapableError

# Why 4: a normalizer may compose characters before the model sees them (NFC/NFKC turn up to
# three code points, such as a Hangul L+V+T jamo sequence, into one); 4 leaves room for that, so
# the cheap length check below never refuses a prompt that would have fitted.
NORMALIZATION_SLACK = 4


class ModelTokenizer:
    def __init__(self, model_dir: Path, model_id: str) -> None:
        from transformers import AutoTokenizer

        self.model_id = model_id
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        template = getattr(self.tokenizer, "chat_template", None) or ""
        # Several named templates (dict): the default one renders chats, a "tool_use" one tools.
        self.chat_template = "\n".join(template.values()) if isinstance(template, dict) else str(template)
        self.model_type = self._model_type(model_dir)
        self.supports_tools = template_supports_tools(self.chat_template)
        self.tool_parser = parser_for(self.chat_template, self.model_type)
        self.eos_token_ids = self._eos_ids(model_dir)
        self.max_chars_per_token = self._max_chars_per_token()

    @staticmethod
    def _model_type(model_dir: Path) -> str | None:
        try:
            value = json.loads((model_dir / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def _max_chars_per_token(self) -> int:
        """An upper bound on the characters of text one token can stand for.

        Every vocabulary entry (added and special tokens included) is spelled with at least one
        character per character of text it matches: byte-level BPE spells one character per
        byte, SentencePiece one per character ("▁" for a space), byte-fallback tokens ("<0xE4>")
        more. So a text of N characters is at least N / (longest entry) tokens, which lets a
        request be refused for length without tokenizing it.
        """
        longest = max((len(token) for token in self.tokenizer.get_vocab()), default=1)
        return max(1, longest) * NORMALIZATION_SLACK

    def _eos_ids(self, model_dir: Path) -> set[int]:
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen = model_dir / "generation_config.json"
        if gen.exists():
            try:
                value = json.loads(gen.read_text()).get("eos_token_id")
            except (OSError, ValueError):
                value = None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(v) for v in value if isinstance(v, int))
        return ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def encode_chat(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """``tools``: OpenAI function tools, rendered by the template (vLLM passes them the same way)."""
        if not self.has_chat_template:
            raise ModelNotChatCapableError(self.model_id)
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, tools=tools
            )
        except Exception as exc:  # jinja raises for messages the template rejects
            raise InvalidRequestError(
                f"The model's chat template rejected the messages: {exc}. Check the roles and contents.",
                param="messages",
            ) from None
        # The template already spells out special tokens (BOS etc.); do not add them twice.
        return self.encode(str(text), add_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))
