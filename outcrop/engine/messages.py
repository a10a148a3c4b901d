"""What crosses between the API side and the engine core.

The dataclasses (``EngineRequest``, ``RequestOutput``, ``TokenLogprob``) are what the API
side works with. The ``msgspec`` structs are the wire format between the API process and
the engine-core process (``core``): MessagePack over ZeroMQ, one ``StepOutputs`` message
per engine step carrying every row's new token ids. Structs are array-like (no field
names on the wire) and tagged where a socket carries several kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from outcrop.engine.sampling import SamplingParams


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class RequestOutput:
    """What one step produced for one sequence (deltas, not totals)."""

    request_id: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    stop_reason: str | None = None  # the stop string that ended the text (vLLM's choice member)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    # True: ``error`` is this request's own (its parameters or content could not be applied),
    # answered 400; False: the engine failed, answered 500.
    error_is_request: bool = False


@dataclass
class EngineRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sink: Any = None  # opaque to the engine; ``deliver`` routes outputs with it
    # False: one output when the sequence finishes instead of one per step, which keeps
    # the HTTP side quiet while non-streaming requests decode.
    stream: bool = True
    # Lower is sooner (vLLM's convention; the router sends 0 for online, 10 for batch records):
    # see ``scheduler`` for how a more urgent class pauses less urgent sequences.
    priority: int = 0


# ---------------------------------------------------------------- core -> API


class CoreOutput(msgspec.Struct, array_like=True, gc=False):
    """One row's result of one step: its new token ids, or how it ended."""

    request_id: str
    token_ids: list[int]
    # (token id, logprob, top [(token id, logprob)]) per new token, rows that asked only
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = []
    finish_reason: str | None = None  # "stop" (EOS) | "length" | "abort" | "error"; text stops are the API's
    error: str | None = None
    error_is_request: bool = False


class CoreStats(msgspec.Struct, array_like=True, gc=False):
    """The core's gauges and cumulative counters; the API side mirrors them into its metrics."""

    running: int = 0
    waiting: int = 0
    paused: int = 0
    kv_cache_usage: float = 0.0
    free_blocks: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    preemptions: int = 0
    prefill_steps: int = 0
    decode_steps: int = 0
    forward_seconds: float = 0.0  # host time in the model's forward calls


class CoreFacts(msgspec.Struct, gc=False):
    """What the core tells the API side once the model is loaded."""

    max_model_len: int
    max_batch: int
    vocab_size: int
    num_blocks: int
    block_size: int
    prefix_caching: bool
    kv_cache_bytes: int
    weight_bytes: int
    memory_bytes: int


class Ready(msgspec.Struct, tag=True, array_like=True, gc=False):
    facts: CoreFacts


class LoadFailed(msgspec.Struct, tag=True, array_like=True, gc=False):
    message: str


class StepOutputs(msgspec.Struct, tag=True, array_like=True, gc=False):
    outputs: list[CoreOutput]
    stats: CoreStats


FromCore = Ready | LoadFailed | StepOutputs


# ---------------------------------------------------------------- API -> core


class AddRequest(msgspec.Struct, tag=True, array_like=True, gc=False):
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    priority: int = 0


class Abort(msgspec.Struct, tag=True, array_like=True, gc=False):
    request_ids: list[str]


class Shutdown(msgspec.Struct, tag=True, array_like=True, gc=False):
    pass


ToCore = AddRequest | Abort | Shutdown
