"""OpenAI-style chat messages, as InvokeModel ``messages`` bodies and ``/v1/chat/completions`` carry them.

Both surfaces check them the same way before a copy is asked, so a bad conversation is a 400
in the caller's dialect whatever the model. Tools, tool messages and structured output are
checked by outcrop/protocol/tools.py and passed to the copy.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError, model_validator

from outcrop.errors import InvalidRequestError

# Bedrock's words when a request asks a model for tool use it cannot do (the copy answers them:
# only it knows whether the model's chat template takes tools).
TOOL_USE_UNSUPPORTED = "This model doesn't support tool use."
ROLES = ("system", "developer", "user", "assistant", "tool")


class ChatMessage(BaseModel):
    """One chat message: a role and its content (text, or a list of content parts)."""

    # Unknown members (``name``, vendor extensions) go through to the copy, which decides.
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    # None only for an assistant turn; every other role must say something.
    content: StrictStr | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _says_something(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(
                f"a '{self.role}' message needs 'content', e.g. "
                f'{{"role": "{self.role}", "content": "Hello"}}'
            )
        return self


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, default=str)[:80]
    except ValueError:
        return "(a number too long to show)"


def check_messages(raw: Any) -> list[dict[str, Any]]:
    """``raw`` if it is a non-empty list of valid chat messages; else InvalidRequestError naming the first fault."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError(
            'messages must be a non-empty list like [{"role": "user", "content": "Hello"}].', param="messages"
        )
    for i, message in enumerate(raw):
        try:
            ChatMessage.model_validate(message)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join([f"messages[{i}]", *(str(p) for p in err["loc"])])
            if err["type"] == "model_type":
                reason = 'it must be an object like {"role": "user", "content": "Hello"}'
            elif err["type"] == "literal_error":
                reason = f"it must be one of {', '.join(ROLES)}"
            elif err["type"] == "value_error":
                reason = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
            else:
                reason = "it must be a string or a list of content parts"
            raise InvalidRequestError(
                f"{where} is {_shown(err.get('input'))}: {reason}.", param=where.replace("[", ".").rstrip("]")
            ) from None
    return raw
