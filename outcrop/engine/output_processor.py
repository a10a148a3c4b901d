"""Output processing on the API side: token ids from the engine core -> text deltas for clients.

The core sends, once per step, every row's new token ids (``CoreOutput``) and decides only
what needs no text: EOS, ``max_tokens``, the context limit, aborts and errors. Everything
about text happens here, in the API process, off the core's step loop:

* incremental UTF-8-safe detokenization (``detokenizer``);
* stop strings: a hit cuts the text before the stop string, finishes the request with
  ``stop`` and is reported back (``ProcessedStep.aborts``) so the core frees its blocks; the
  tokens the core made meanwhile are dropped;
* the held back tail of a streaming request's text that could still begin a stop string;
* held (non-streaming) outputs: one output when the request finishes, not one per step;
* per-request TTFT/TPOT and finish-reason metrics, seen from where the client waits.

A failure while processing one request's text fails that request alone (an error output,
answered 400 as it is its own content) and aborts it in the core.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from outcrop.engine.detokenizer import IncrementalDetokenizer
from outcrop.engine.messages import CoreOutput, EngineRequest, RequestOutput, TokenLogprob
from outcrop.engine.metrics import EngineMetrics

log = logging.getLogger(__name__)


@dataclass
class _State:
    request: EngineRequest
    detok: IncrementalDetokenizer
    arrival: float
    sent_chars: int = 0
    num_tokens: int = 0
    first_token_time: float | None = None
    held_token_ids: list[int] = field(default_factory=list)
    held_logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | None = None  # the stop string that ended the text


@dataclass
class ProcessedStep:
    outputs: list[tuple[EngineRequest, RequestOutput]] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)  # request ids the core should stop (stop strings, errors)


class OutputProcessor:
    def __init__(self, tokenizer: Any, eos_token_ids: set[int], metrics: EngineMetrics) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.metrics = metrics
        self._states: dict[str, _State] = {}

    @property
    def num_unfinished(self) -> int:
        return len(self._states)

    def add(self, request: EngineRequest) -> None:
        self._states[request.request_id] = _State(
            request, IncrementalDetokenizer(self.tokenizer), time.monotonic()
        )

    def forget(self, request_id: str) -> None:
        """The client left: nothing more is delivered for this request (it ends as an abort)."""
        if self._states.pop(request_id, None) is not None:
            self.metrics.requests_finished.labels("abort").inc()

    def process(self, core_outputs: list[CoreOutput]) -> ProcessedStep:
        step = ProcessedStep()
        now = time.monotonic()
        for core in core_outputs:
            state = self._states.get(core.request_id)
            if state is None:  # finished here already (a stop string) or forgotten
                continue
            try:
                self._process_one(state, core, now, step)
            except Exception as exc:  # this request's text only; the others carry on
                self._fail_one(state, exc, step)
        return step

    def fail_all(self, message: str) -> list[tuple[EngineRequest, RequestOutput]]:
        """The core is gone: every unfinished request ends with an engine error."""
        outputs = []
        for state in list(self._states.values()):
            state.finish_reason = "error"
            out = self._output(state, "", [], [])
            out.error = message
            outputs.append((state.request, out))
            self.metrics.requests_finished.labels("error").inc()
        self._states.clear()
        return outputs

    # ------------------------------------------------------------------ one request

    def _process_one(self, state: _State, core: CoreOutput, now: float, step: ProcessedStep) -> None:
        request, params = state.request, state.request.params
        if core.error is not None or core.finish_reason in ("abort", "error"):
            state.finish_reason = core.finish_reason or "error"
            out = self._output(state, "", [], [])
            out.error, out.error_is_request = core.error, core.error_is_request
            self._finish(state, now, step, out)
            return
        logprobs = [TokenLogprob(t, lp, [(a, b) for a, b in top]) for t, lp, top in core.logprobs]
        if core.token_ids and state.first_token_time is None:
            state.first_token_time = now
            self.metrics.ttft.observe(now - state.arrival)
        for token in core.token_ids:
            state.num_tokens += 1
            if not (token in self.eos_token_ids and not params.ignore_eos):
                state.detok.push(token)
        if core.finish_reason is not None:
            state.detok.flush()  # held-back bytes may complete a stop string
        if self._hit_stop_string(state):
            state.finish_reason = "stop"
            if core.finish_reason is None:
                step.aborts.append(request.request_id)
        elif core.finish_reason is not None:
            state.finish_reason = core.finish_reason
        if request.stream:
            out = self._output(state, self._take_text(state), list(core.token_ids), logprobs)
        else:
            state.held_token_ids.extend(core.token_ids)
            state.held_logprobs.extend(logprobs)
            if state.finish_reason is None:
                return
            out = self._output(state, self._take_text(state), state.held_token_ids, state.held_logprobs)
        if state.finish_reason is not None:
            self._finish(state, now, step, out)
        else:
            step.outputs.append((request, out))

    def _finish(self, state: _State, now: float, step: ProcessedStep, out: RequestOutput) -> None:
        step.outputs.append((state.request, out))
        self._states.pop(state.request.request_id, None)
        self.metrics.requests_finished.labels(state.finish_reason).inc()
        if state.num_tokens > 1 and state.first_token_time is not None:
            self.metrics.tpot.observe((now - state.first_token_time) / (state.num_tokens - 1))

    def _hit_stop_string(self, state: _State) -> bool:
        stops = state.request.params.stop
        if not stops:
            return False
        text = state.detok.text
        # Only the tail can contain a new match: the last delta plus the longest stop string.
        window_start = max(0, state.sent_chars - max(len(s) for s in stops))
        best = -1
        for stop in stops:
            idx = text.find(stop, window_start)
            if idx != -1 and (best == -1 or idx < best):
                best, state.stop_reason = idx, stop
        if best == -1:
            return False
        state.detok.text = text[:best]
        return True

    def _take_text(self, state: _State) -> str:
        """The text that may be sent now; while running, hold back a possible stop-string prefix."""
        text = state.detok.text
        end = len(text)
        stops = state.request.params.stop
        if state.finish_reason is None and stops:
            end = max(state.sent_chars, end - (max(len(s) for s in stops) - 1))
        delta = text[state.sent_chars : end]
        state.sent_chars = end
        return delta

    def _output(
        self, state: _State, text: str, token_ids: list[int], logprobs: list[TokenLogprob]
    ) -> RequestOutput:
        return RequestOutput(
            request_id=state.request.request_id,
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            finished=state.finish_reason is not None,
            finish_reason=state.finish_reason,
            stop_reason=state.stop_reason,
            prompt_tokens=len(state.request.prompt_ids),
            completion_tokens=state.num_tokens,
        )

    def _fail_one(self, state: _State, exc: BaseException, step: ProcessedStep) -> None:
        request_id = state.request.request_id
        log.warning("request %s failed while decoding its output", request_id, exc_info=exc)
        state.finish_reason = "error"
        out = self._output(state, "", [], [])
        out.error = (
            "This request failed on the model copy while decoding its output or matching its stop strings: "
            f"{type(exc).__name__}: {exc}. Other requests were not affected; check this request's "
            "parameters and content."
        )
        out.error_is_request = True
        step.aborts.append(request_id)
        self._finish(state, time.monotonic(), step, out)
