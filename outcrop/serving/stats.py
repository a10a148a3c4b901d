"""The last hour of the gateway's own traffic, in memory: what ``GET /outcrop/stats`` and the console's
charts show, with no Prometheus server required.

A ring buffer of :data:`CAPACITY_STEPS` steps of :data:`STEP_SECONDS` each. Invocations are
counted into the step they end in, as they end (:meth:`RecentStats.invocation`,
:meth:`~RecentStats.first_token`, :meth:`~RecentStats.error`, :meth:`~RecentStats.throttle`);
gauges (queue depth, copies per model) are sampled by :meth:`RecentStats.sample_loop`, which the
app runs while it serves. A step keeps raw latency samples only while it is the current one;
once the clock moves on they are folded into p50/p95, so memory stays bounded whatever the load.

What a step says (:meth:`RecentStats.series`): ``requests`` model invocations that ended in it
(answered, failed or throttled), ``errors`` the failed ones (4xx and 5xx, not throttles),
``throttles`` those refused by throttling or ModelNotReady, ``latencyP50Ms``/``latencyP95Ms`` to
the last token of answered ones, ``ttftP50Ms``/``ttftP95Ms`` to the first chunk of streams,
``tokensPerSecond`` generated tokens / step length, ``queueDepth`` the most requests seen
waiting for a copy (all models), ``copies[model]`` the most live (Starting or Ready) copies seen.
Counts are 0 in steps the gateway was up for and null before it started; latencies and gauges are
null where nothing was measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Why 10 s: fine enough to see a burst in a chart, coarse enough that an hour is 360 points.
STEP_SECONDS = 10
# Why 360: one hour of 10 s steps, the console's chart window.
CAPACITY_STEPS = 360
# Why 2 s: queue depth changes in milliseconds; five samples a step catch most bursts cheaply.
SAMPLE_INTERVAL_SECONDS = 2.0
# Why 4096: p95 of a uniform sample of 4,096 is within a percent or so; beyond it, reservoir sampling.
MAX_SAMPLES_PER_STEP = 4096

SERIES = (
    "requests",
    "errors",
    "throttles",
    "latencyP50Ms",
    "latencyP95Ms",
    "ttftP50Ms",
    "ttftP95Ms",
    "tokensPerSecond",
    "queueDepth",
)


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of a non-empty sorted list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class _Samples:
    """Raw values of the current step (a reservoir beyond MAX_SAMPLES_PER_STEP), folded at step end."""

    values: list[float] = field(default_factory=list)
    seen: int = 0

    def add(self, value: float, rng: random.Random) -> None:
        self.seen += 1
        if len(self.values) < MAX_SAMPLES_PER_STEP:
            self.values.append(value)
        else:
            slot = rng.randrange(self.seen)
            if slot < MAX_SAMPLES_PER_STEP:
                self.values[slot] = value

    def fold(self) -> tuple[float | None, float | None]:
        if not self.values:
            return None, None
        ordered = sorted(self.values)
        return percentile(ordered, 50), percentile(ordered, 95)


@dataclass
class _Step:
    index: int  # epoch seconds // STEP_SECONDS
    requests: int = 0
    errors: int = 0
    throttles: int = 0
    output_tokens: int = 0
    latency: _Samples | None = field(default_factory=_Samples)
    ttft: _Samples | None = field(default_factory=_Samples)
    latency_ms: tuple[float | None, float | None] = (None, None)  # (p50, p95) once folded
    ttft_ms: tuple[float | None, float | None] = (None, None)
    queue_depth: int | None = None
    copies: dict[str, int] = field(default_factory=dict)

    def fold(self) -> None:
        """Turn the raw samples into percentiles (the step is over, or being read)."""
        if self.latency is not None:
            self.latency_ms = self.latency.fold()
        if self.ttft is not None:
            self.ttft_ms = self.ttft.fold()

    def close(self) -> None:
        self.fold()
        self.latency = self.ttft = None


class RecentStats:
    """The ring buffer (see the module docstring). Thread-safe: invocations end on the event loop,
    the sampler and readers may run in worker threads."""

    def __init__(
        self,
        *,
        step_seconds: int = STEP_SECONDS,
        capacity_steps: int = CAPACITY_STEPS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.step_seconds = step_seconds
        self.capacity_steps = capacity_steps
        self.clock = clock
        self.started_index = int(clock() // step_seconds)
        self._ring: list[_Step | None] = [None] * capacity_steps
        self._open: _Step | None = None  # the one step that still holds raw samples
        self._lock = threading.Lock()
        self._rng = random.Random(0)

    # ------------------------------------------------------------------ recording

    def _step(self) -> _Step:
        """The current step (callers hold the lock); a slot left from an older step is reused."""
        index = int(self.clock() // self.step_seconds)
        slot = index % self.capacity_steps
        step = self._ring[slot]
        if step is None or step.index != index:
            if self._open is not None:
                self._open.close()
            step = self._ring[slot] = self._open = _Step(index)
        return step

    def invocation(self, latency_seconds: float, output_tokens: int) -> None:
        """An invocation was answered (to its last token)."""
        with self._lock:
            step = self._step()
            step.requests += 1
            step.output_tokens += max(0, output_tokens)
            assert step.latency is not None
            step.latency.add(latency_seconds * 1000, self._rng)

    def first_token(self, seconds: float) -> None:
        """A stream sent its first chunk ``seconds`` after the request arrived."""
        with self._lock:
            step = self._step()
            assert step.ttft is not None
            step.ttft.add(seconds * 1000, self._rng)

    def error(self) -> None:
        """An invocation failed (client or server error)."""
        with self._lock:
            step = self._step()
            step.requests += 1
            step.errors += 1

    def throttle(self) -> None:
        """An invocation was refused by throttling or ModelNotReady."""
        with self._lock:
            step = self._step()
            step.requests += 1
            step.throttles += 1

    def sample(self, queue_depth: int, copies: dict[str, int]) -> None:
        """Gauges now: requests waiting for a copy (all models) and live copies per model name."""
        with self._lock:
            step = self._step()
            step.queue_depth = max(step.queue_depth or 0, queue_depth)
            for name, count in copies.items():
                step.copies[name] = max(step.copies.get(name, 0), count)

    def sample_serving(self, read: Callable[[], dict[str, Any]]) -> None:
        """Sample the gauges from the serving layer's stats (``Serving.stats``)."""
        models = read().get("models", {})
        queue = sum(int(m.get("queue_depth", 0)) for m in models.values())
        copies = {
            name: int(m.get("copies", {}).get("Starting", 0)) + int(m.get("copies", {}).get("Ready", 0))
            for name, m in models.items()
        }
        self.sample(queue, copies)

    async def sample_loop(
        self, read: Callable[[], dict[str, Any]], interval_seconds: float = SAMPLE_INTERVAL_SECONDS
    ) -> None:
        """Sample the gauges every ``interval_seconds`` until cancelled (the app runs it while serving)."""
        while True:
            with contextlib.suppress(Exception):  # a failed sample leaves a gap, never stops the loop
                self.sample_serving(read)
            await asyncio.sleep(interval_seconds)

    # ------------------------------------------------------------------ reading

    def series(self, minutes: int = 60) -> dict[str, Any]:
        """The last ``minutes`` (at most the buffer's length) as ``GET /outcrop/stats`` answers them."""
        steps = min(self.capacity_steps, max(1, minutes * 60 // self.step_seconds))
        with self._lock:
            current = self._step()
            current.fold()
            first = current.index - steps + 1
            rows: list[_Step | None] = []
            for index in range(first, current.index + 1):
                step = self._ring[index % self.capacity_steps]
                rows.append(step if step is not None and step.index == index else None)
            out: dict[str, list[Any]] = {name: [] for name in SERIES}
            models = sorted({name for step in rows if step is not None for name in step.copies})
            copies: dict[str, list[int | None]] = {name: [] for name in models}
            for index, step in zip(range(first, current.index + 1), rows, strict=True):
                up = index >= self.started_index
                zero = 0 if up else None
                if step is None:
                    for name in SERIES:
                        out[name].append(zero if name in ("requests", "errors", "throttles") else None)
                    out["tokensPerSecond"][-1] = 0.0 if up else None
                    for name in models:
                        copies[name].append(None)
                    continue
                out["requests"].append(step.requests)
                out["errors"].append(step.errors)
                out["throttles"].append(step.throttles)
                out["latencyP50Ms"].append(_ms(step.latency_ms[0]))
                out["latencyP95Ms"].append(_ms(step.latency_ms[1]))
                out["ttftP50Ms"].append(_ms(step.ttft_ms[0]))
                out["ttftP95Ms"].append(_ms(step.ttft_ms[1]))
                out["tokensPerSecond"].append(round(step.output_tokens / self.step_seconds, 3))
                out["queueDepth"].append(step.queue_depth)
                for name in models:
                    copies[name].append(step.copies.get(name))
        return {
            "stepSeconds": self.step_seconds,
            "timestamps": [index * self.step_seconds for index in range(first, current.index + 1)],
            "series": out,
            "copies": copies,
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
