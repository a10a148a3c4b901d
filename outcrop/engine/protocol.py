"""Typed wire messages of the model copy's OpenAI-compatible HTTP contract.

Requests forbid unknown fields (a typo such as ``max_token`` is a 400, not a silently
ignored parameter). Fields that OpenAI defines but this copy does not implement are
accepted only at their neutral value; anything else is a 400 that says so.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Number = StrictInt | StrictFloat

# Why int64: torch's ``Generator.manual_seed`` takes a signed or unsigned 64-bit value and
# raises on anything wider; vLLM accepts exactly this range too, so a seed that works on one
# OpenAI-compatible server works on the other. Siblings use ``seed + i`` (i < 64), which still
# fits the unsigned range torch accepts.
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1
# Why 2**31 - 1: token counts, top-k and the like are int32 on every engine; a larger value
# can only be a mistake, and it must never reach a tensor constructor.
INT32_MAX = 2**31 - 1
# Why +-100: OpenAI's documented range for logit_bias values (100 already bans or forces a token).
LOGIT_BIAS_LIMIT = 100.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class SamplingFields(_Strict):
    """Parameters shared by completions and chat completions."""

    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(
        None, ge=1, le=INT32_MAX, description="New tokens at most (default: 16)."
    )
    temperature: Number | None = Field(None, ge=0.0, le=2.0)
    top_p: Number | None = Field(None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(None, ge=-1, le=INT32_MAX, description="0 or -1 = off (extension).")
    min_p: Number | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: Number | None = Field(None, gt=0.0, le=10.0, description="HF style (extension).")
    frequency_penalty: Number | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: Number | None = Field(None, ge=-2.0, le=2.0)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(
        None, ge=SEED_MIN, le=SEED_MAX, description="Signed 64-bit: -2**63 .. 2**63-1 (as vLLM)."
    )
    n: StrictInt = Field(1, ge=1, le=64)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    ignore_eos: StrictBool = False
    user: StrictStr | None = None
    logit_bias: dict[str, Annotated[Number, Field(ge=-LOGIT_BIAS_LIMIT, le=LOGIT_BIAS_LIMIT)]] | None = None
    # vLLM's extension (``--scheduling-policy priority``): lower is served sooner. Outcrop's router
    # sends 10 for batch records and leaves it out (0) for online requests.
    priority: StrictInt = Field(
        0, ge=-(2**31), le=2**31 - 1, description="Scheduling priority; lower runs sooner (extension)."
    )
    # Output constraints (``guided``): OpenAI's response_format, and vLLM's guided_* extras and
    # their newer spelling ``structured_outputs`` ({"json"|"regex"|"choice"|"grammar": ...}).
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | StrictStr | None = None
    guided_regex: StrictStr | None = None
    guided_choice: list[StrictStr] | None = None
    guided_grammar: StrictStr | None = None
    structured_outputs: dict[str, Any] | None = None
    # vLLM clients may name a backend; this copy has one (llguidance), so the value is not used.
    guided_decoding_backend: StrictStr | None = None


class CompletionRequest(SamplingFields):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = Field(None, ge=1, le=64)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: StrictStr | list[dict[str, Any]] | None = None
    name: StrictStr | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=INT32_MAX)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: StrictBool | None = None
    add_generation_prompt: StrictBool = True


class TokenizeRequest(_Strict):
    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: StrictBool = True


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int


# ---------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now_seconds() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    stop_reason: str | None = None  # vLLM's: the stop string that ended the text, else None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] = Field(default_factory=list)


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: dict[str, Any] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | None = None  # vLLM's: the stop string that ended the text, else None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's delta shape: index, id, type, function


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: dict[str, Any] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | None = None  # vLLM's: the stop string that ended the text, else None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "outcrop"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "draining", "failed"]
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    memory_bytes: int | None = None
    kv_cache_bytes: int | None = None
    kv_cache_blocks: int | None = None  # blocks in the pool
    kv_cache_free_blocks: int | None = None
    block_size: int | None = None  # tokens per block
    prefix_caching: bool | None = None
    engine: str | None = None  # "core process" | "in process"
    max_batch: int | None = None
    max_model_len: int | None = None
    running: int = 0
    waiting: int = 0
    detail: str | None = None
