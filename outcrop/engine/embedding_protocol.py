"""Typed wire messages of an embedding copy: OpenAI's ``POST /v1/embeddings`` plus two extensions.

The gateway's OpenAI route parses the caller's body with :class:`EmbeddingRequest` too, so a
malformed body is refused the same way (and with the same words) at the gateway and at a copy.
Extensions: ``normalize`` (Titan's flag: L2-normalize the vectors; None = the model's own
pipeline) and ``priority`` (the router's scheduling priority, as for text copies).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

# Why 2,048: OpenAI's limit on inputs per embeddings request; clients (LangChain) chunk by it.
MAX_INPUTS = 2048
# Why 2**31 - 1: token ids are int32 on every engine.
INT32_MAX = 2**31 - 1

TokenIds = list[Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = None
    input: StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1, le=INT32_MAX)
    user: StrictStr | None = None
    normalize: StrictBool | None = None  # extension (Titan's 'normalize')
    priority: StrictInt = 0  # extension (the router's priority)

    def inputs(self) -> list[str | list[int]]:
        """The inputs as a list: one text, texts, one token-id list, or token-id lists."""
        raw: Any = self.input
        if isinstance(raw, str):
            return [raw]
        if raw and all(isinstance(x, int) for x in raw):
            return [list(raw)]
        return list(raw)


def check_inputs(inputs: list[str | list[int]]) -> None:
    """Raise ValueError naming the first input OpenAI would refuse (empty, or too many)."""
    if not inputs:
        raise ValueError("'input' is empty; send a string, a list of strings, or token-id lists.")
    if len(inputs) > MAX_INPUTS:
        raise ValueError(
            f"'input' holds {len(inputs)} items; at most {MAX_INPUTS} per request. Split it into several requests."
        )
    for i, item in enumerate(inputs):
        if len(item) == 0:
            raise ValueError(f"input[{i}] is empty; every input must be a non-empty string or token-id list.")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class EmbeddingHealth(BaseModel):
    status: Literal["ok", "loading", "draining", "failed"]
    model: str | None = None
    kind: Literal["embedding"] = "embedding"
    detail: str | None = None
    device: str | None = None
    dtype: str | None = None
    dimension: int | None = None
    pooling: str | None = None
    max_seq_length: int | None = None
    max_batch: int | None = None
    waiting: int | None = None
