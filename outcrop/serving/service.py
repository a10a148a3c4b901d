"""The serving service: routes requests to model copies, starts and stops copies, scales them.

Per model (a "pool"): the copies, a bounded wait queue (online before batch), the
least-outstanding-requests choice among ready copies with a per-copy cap, cold starts,
and a restart backoff after failures. One task per copy runs its lifecycle
(launch -> health until Ready -> health checks -> drain -> stop); one autoscaler task
carries out :func:`outcrop.serving.autoscaler.decide`. Everything runs on one event
loop, so the bookkeeping needs no locks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcrop.config import ModelServingSpec, OutcropConfig
from outcrop.errors import (
    InvalidRequestError,
    ModelFailedError,
    ModelNotReadyError,
    ModelTimeoutError,
    NotFoundError,
    OutcropError,
    ServiceUnavailableError,
)
from outcrop.registry.modelstore import MANIFEST_NAME
from outcrop.registry.service import Registry
from outcrop.serving.autoscaler import CopyView, ModelLoad, ScaleAction, decide
from outcrop.serving.copies import CopyInfo, CopyStatus, ModelCopy
from outcrop.serving.copyclient import CopyClient, CopyResponse, CopyTransportError
from outcrop.serving.launchers import LaunchedCopy, LaunchRequest, free_port, get_launcher
from outcrop.serving.memory import EvictionCandidate, available_memory_bytes, gib, plan_fit
from outcrop.serving.protocol import CopyErrorResponse
from outcrop.serving.routing import Priority, Waiter, WaitQueue, choose_copy
from outcrop.store.imports import ImportedModel, ListFilter

__all__ = ["ColdStartPolicy", "CopyInfo", "CopyStatus", "Priority", "Serving"]

log = logging.getLogger("outcrop.serving")

# Why 0.05 s: a tiny model is ready in ~1 s; polling /health faster than this costs the
# loading copy CPU, slower adds visibly to every cold start.
STARTUP_POLL_SECONDS = 0.05
# Why 20 polls (1 s): a copy whose connection just broke is usually exiting; waiting that
# long for its exit code fails it at once instead of after several health checks.
SUSPECT_EXIT_POLLS = 20
# Stop-request bookkeeping: how long past the drain bound stop() waits for a killed copy.
KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ColdStartPolicy:
    """What a request does when its model has no ready copy (one is started either way)."""

    wait: bool  # True: hold the request until a copy is ready; False: ModelNotReadyError at once
    max_wait_seconds: float  # bounded wait; then ServiceUnavailableError(retry_after_seconds=...)
    # True when the caller chose ``wait`` explicitly for this request; otherwise a model's
    # ``cold_start_wait`` override (serving.model_overrides) replaces the surface's default.
    from_request: bool = False


@dataclass(eq=False)
class _Pool:
    """One model's copies, queue and counters."""

    model: ImportedModel
    spec: ModelServingSpec
    copies: dict[str, ModelCopy] = field(default_factory=dict)
    queue: WaitQueue = field(default_factory=WaitQueue)
    cold_starts: int = 0
    cold_start_seconds_sum: float = 0.0
    cold_start_seconds_last: float | None = None
    start_failures: int = 0  # copies that never became ready
    copy_failures: int = 0  # ready copies that died or stopped answering
    consecutive_failures: int = 0
    next_start_at: float = 0.0  # monotonic; restart backoff
    last_failure: str | None = None
    demand_samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    demand_bucket: int = 0  # peak demand since the last sample

    def live(self) -> list[ModelCopy]:
        return [c for c in self.copies.values() if c.status.is_live()]

    def ready(self) -> list[ModelCopy]:
        return [c for c in self.copies.values() if c.status is CopyStatus.READY]

    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.copies.values() if c.status.is_live())

    def note_demand(self) -> None:
        self.demand_bucket = max(self.demand_bucket, self.in_flight() + self.queue.depth)

    def peak_demand(self, now: float, window_seconds: float) -> int:
        while self.demand_samples and self.demand_samples[0][0] < now - window_seconds:
            self.demand_samples.popleft()
        return max([self.demand_bucket, *(d for _, d in self.demand_samples)])

    def sample(self, now: float) -> None:
        self.demand_samples.append((now, self.demand_bucket))
        self.demand_bucket = self.in_flight() + self.queue.depth


class _CopyUnusable(Exception):
    """Internal: the chosen copy could not take the request (died, refused); try another once."""

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


class Serving:
    """Routes requests to copies of imported models and keeps the right number of copies running."""

    def __init__(self, config: OutcropConfig, registry: Registry) -> None:
        self.config = config
        self.settings = config.serving
        self.registry = registry
        self.launcher = get_launcher(self.settings)  # fails fast on an unknown launcher / bad template
        self._pools: dict[str, _Pool] = {}
        self._resolved: dict[str, tuple[float, ImportedModel]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lifecycles: dict[str, asyncio.Task[None]] = {}
        self._folders: dict[str, Path] = {}
        self._folder_locks: dict[str, asyncio.Lock] = {}
        self._wake: asyncio.Event | None = None
        self._autoscaler: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ lifecycle of the service

    async def start(self) -> None:
        """Start the autoscaler loop and warm the models whose ``min_copies`` is above 0."""
        self._closing = False
        self._wake = asyncio.Event()
        self._autoscaler = asyncio.create_task(self._autoscale_loop(), name="outcrop-autoscaler")
        self._spawn(self._warm_min_copies())

    async def stop(self) -> None:
        """Drain and stop every copy (SIGTERM, then SIGKILL after the drain bound)."""
        self._closing = True
        if self._autoscaler is not None:
            self._autoscaler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._autoscaler
            self._autoscaler = None
        shutting = ServiceUnavailableError(
            "Outcrop is shutting down; retry the request in a moment or against another server.",
            retry_after_seconds=self.settings.cold_start_retry_after_seconds,
        )
        for pool in self._pools.values():
            pool.queue.fail_all(shutting)
            for copy in list(pool.copies.values()):
                self._begin_stop(pool, copy, "Outcrop is shutting down")
        lifecycles = list(self._lifecycles.values())
        if lifecycles:
            await asyncio.wait(
                lifecycles, timeout=self.settings.drain_timeout_seconds + 2 * KILL_GRACE_SECONDS
            )
        for task in [*self._lifecycles.values(), *self._tasks]:
            task.cancel()
        for pool in self._pools.values():
            for copy in list(pool.copies.values()):
                if copy.launched is not None:
                    copy.launched.kill()
                if copy.client is not None:
                    await copy.client.aclose()
        pending = [*self._lifecycles.values(), *self._tasks]
        if pending:
            await asyncio.wait(pending, timeout=KILL_GRACE_SECONDS)

    # ------------------------------------------------------------------ requests

    async def post(
        self,
        model: str,
        path: str,
        body: dict[str, Any],
        *,
        cold_start: ColdStartPolicy,
        priority: Priority = Priority.ONLINE,
        deadline_seconds: float | None = None,
    ) -> dict[str, Any]:
        """A non-streaming JSON call to a copy of ``model`` (name or imported-model ARN)."""
        limit = deadline_seconds or self.settings.default_deadline_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        resolved = await self._resolve(model)
        pool = self._pool(resolved)
        payload = {**body, "model": resolved.name}
        policy = self._policy(pool, cold_start)
        try:
            async with asyncio.timeout_at(deadline):
                exclude: frozenset[str] = frozenset()
                for attempt in (0, 1):
                    copy = await self._acquire(pool, priority, policy, exclude)
                    try:
                        return await self._post_once(pool, copy, path, payload)
                    except _CopyUnusable as exc:
                        if attempt == 1:
                            raise self._unusable_error(pool, exc) from None
                        exclude = frozenset({copy.copy_id})
                    finally:
                        self._release(pool, copy)
        except TimeoutError:
            raise self._timeout_error(pool, limit) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(
        self,
        model: str,
        path: str,
        body: dict[str, Any],
        *,
        cold_start: ColdStartPolicy,
        priority: Priority = Priority.ONLINE,
        deadline_seconds: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """A streaming call: yields each SSE ``data:`` JSON object of the copy (not ``[DONE]``).

        Errors before the first chunk are raised like :meth:`post` (a copy that died before
        answering is retried once on another copy); after the first chunk, a failed copy
        raises ModelFailedError and an expired deadline ModelTimeoutError.
        """
        limit = deadline_seconds or self.settings.default_deadline_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        resolved = await self._resolve(model)
        pool = self._pool(resolved)
        payload = {**body, "model": resolved.name, "stream": True}
        policy = self._policy(pool, cold_start)
        exclude: frozenset[str] = frozenset()
        started = False
        for attempt in (0, 1):
            try:
                async with asyncio.timeout_at(deadline):
                    copy = await self._acquire(pool, priority, policy, exclude)
            except TimeoutError:
                raise self._timeout_error(pool, limit) from None
            response: CopyResponse | None = None
            try:
                try:
                    async with asyncio.timeout_at(deadline):
                        response = await self._open_stream(pool, copy, path, payload)
                except _CopyUnusable as exc:
                    if attempt == 1:
                        raise self._unusable_error(pool, exc) from None
                    exclude = frozenset({copy.copy_id})
                    continue
                lines = response.aiter_lines()
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            line = await anext(lines)
                    except StopAsyncIteration:
                        return
                    except CopyTransportError as exc:
                        self._suspect(pool, copy, exc)
                        if started or attempt == 1:
                            raise ModelFailedError(
                                f"The copy of '{pool.model.name}' stopped while streaming "
                                f"({exc}); send the request again.",
                                model_id=pool.model.id,
                            ) from None
                        exclude = frozenset({copy.copy_id})
                        break
                    chunk = _sse_data(line)
                    if chunk == "[DONE]":
                        return
                    if not isinstance(chunk, dict):
                        continue  # comments, keep-alives, event names: not data objects
                    error = CopyErrorResponse.parse(chunk) if "error" in chunk else None
                    if error is not None:
                        raise ModelFailedError(
                            f"The copy of '{pool.model.name}' failed while streaming: {error.error.message}",
                            model_id=pool.model.id,
                        )
                    started = True
                    yield chunk
            except TimeoutError:
                raise self._timeout_error(pool, limit) from None
            finally:
                if response is not None:
                    await response.aclose()
                self._release(pool, copy)

    # ------------------------------------------------------------------ admin

    async def warm(self, model: str, copies: int = 1) -> None:
        """Start copies of ``model`` until ``copies`` are live (not beyond max_copies); wait until ready."""
        resolved = await self._resolve(model)
        pool = self._pool(resolved)
        target = max(1, min(copies, pool.spec.max_copies))
        while len(pool.live()) < target:
            self._start_copy(pool, cold=False)
        limit = self.settings.copy_start_timeout_seconds
        deadline = time.monotonic() + limit
        while any(c.status is CopyStatus.STARTING for c in pool.copies.values()):
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"Copies of '{resolved.name}' were not ready within {limit:g} s "
                    "(serving.copy_start_timeout_seconds).",
                    retry_after_seconds=self.settings.cold_start_retry_after_seconds,
                )
            await asyncio.sleep(STARTUP_POLL_SECONDS)
        if not pool.ready():
            raise ServiceUnavailableError(
                f"No copy of '{resolved.name}' could be started: {pool.last_failure or 'it was stopped'}.",
                retry_after_seconds=max(1.0, pool.next_start_at - time.monotonic()),
            )

    async def stop_model(self, model_id: str) -> int:
        """Drain and stop every copy of a model (by id), e.g. before it is deleted; how many were stopped."""
        self._resolved = {k: v for k, v in self._resolved.items() if v[1].id != model_id}
        pool = self._pools.get(model_id)
        if pool is None:
            return 0
        pool.queue.fail_all(
            ServiceUnavailableError(f"Model '{pool.model.name}' is being removed; its copies are stopping.")
        )
        stopping = list(pool.copies.values())
        for copy in stopping:
            self._begin_stop(pool, copy, "the model is being removed")
        tasks = [self._lifecycles[c.copy_id] for c in stopping if c.copy_id in self._lifecycles]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.drain_timeout_seconds + 2 * KILL_GRACE_SECONDS)
        if not pool.copies:
            self._pools.pop(model_id, None)
        self._folders.pop(model_id, None)
        return len(stopping)

    def copies(self) -> list[CopyInfo]:
        """Every copy that is not stopped or failed, oldest first."""
        found = [c.info() for pool in self._pools.values() for c in pool.copies.values()]
        return sorted(found, key=lambda c: c.started_at)

    def stats(self) -> dict[str, Any]:
        """Per-model queue depth, copies by state, cold starts and start failures (for /metrics)."""
        models: dict[str, Any] = {}
        for pool in self._pools.values():
            by_state = {s.value: 0 for s in CopyStatus if not s.is_terminal()}
            for c in pool.copies.values():
                by_state[c.status.value] = by_state.get(c.status.value, 0) + 1
            models[pool.model.name] = {
                "model_id": pool.model.id,
                "queue_depth": pool.queue.depth,
                "in_flight": pool.in_flight(),
                "copies": by_state,
                "cold_starts": pool.cold_starts,
                "cold_start_seconds_sum": pool.cold_start_seconds_sum,
                "cold_start_seconds_last": pool.cold_start_seconds_last,
                "start_failures": pool.start_failures,
                "copy_failures": pool.copy_failures,
                "last_failure": pool.last_failure,
            }
        return {"models": models}

    def spec_for(self, model: ImportedModel) -> ModelServingSpec:
        """``serving.defaults`` with the fields a ``serving.model_overrides`` entry (name or id) sets."""
        override = self.settings.model_overrides.get(model.name) or self.settings.model_overrides.get(
            model.id
        )
        if override is None:
            return self.settings.defaults
        merged = self.settings.defaults.model_dump()
        merged.update({k: getattr(override, k) for k in override.model_fields_set})
        spec = ModelServingSpec.model_validate(merged)
        if spec.min_copies > spec.max_copies:
            spec = spec.model_copy(update={"max_copies": spec.min_copies})
        return spec

    # ------------------------------------------------------------------ request path internals

    def _policy(self, pool: _Pool, policy: ColdStartPolicy) -> ColdStartPolicy:
        if policy.from_request or pool.spec.cold_start_wait is None:
            return policy
        return ColdStartPolicy(pool.spec.cold_start_wait, policy.max_wait_seconds, from_request=True)

    async def resolve(self, name_or_arn: str) -> ImportedModel:
        """``registry.get_model`` cached for ``serving.model_cache_seconds`` (NotFoundError if unknown).

        The request path resolves through this cache; API routes can too, to skip a database
        query (~0.3-1 ms) per request.
        """
        return await self._resolve(name_or_arn)

    async def _resolve(self, name_or_arn: str) -> ImportedModel:
        now = time.monotonic()
        hit = self._resolved.get(name_or_arn)
        if hit is not None and hit[0] > now:
            return hit[1]
        model = await asyncio.to_thread(self.registry.get_model, name_or_arn)
        if len(self._resolved) > 4096:
            self._resolved.clear()
        self._resolved[name_or_arn] = (now + self.settings.model_cache_seconds, model)
        return model

    def _pool(self, model: ImportedModel) -> _Pool:
        pool = self._pools.get(model.id)
        if pool is None:
            pool = self._pools[model.id] = _Pool(model=model, spec=self.spec_for(model))
        return pool

    async def _acquire(
        self, pool: _Pool, priority: Priority, policy: ColdStartPolicy, exclude: frozenset[str]
    ) -> ModelCopy:
        """A copy slot for one request: at once, after a wait in the queue, or an error."""
        if self._closing:
            raise ServiceUnavailableError("Outcrop is shutting down; retry against another server.")
        if exclude and not any(c.copy_id not in exclude for c in pool.live()):
            exclude = frozenset()  # nothing else to try: the same copy once more beats failing
        cap = pool.spec.max_concurrency_per_copy
        if pool.queue.depth == 0:
            copy = choose_copy(pool.copies.values(), cap, exclude)
            if copy is not None:
                copy.in_flight += 1
                pool.note_demand()
                return copy
        wait_limit: float | None = None
        if not any(c.copy_id not in exclude for c in pool.ready()):
            if not pool.live():
                try:
                    self._start_copy(pool, cold=True)
                except ServiceUnavailableError:
                    backoff_left = pool.next_start_at - time.monotonic()
                    if not (policy.wait and 0 < backoff_left < policy.max_wait_seconds):
                        raise
                    # A holding request outlasts a short restart backoff: the autoscaler
                    # starts the copy when it ends, and this request waits for it.
            if not policy.wait:
                raise ModelNotReadyError(
                    pool.model.name, retry_after_seconds=self.settings.cold_start_retry_after_seconds
                )
            wait_limit = policy.max_wait_seconds
        if pool.queue.depth >= self.settings.max_queue_per_model:
            raise ServiceUnavailableError(
                f"Model '{pool.model.name}' already has {pool.queue.depth} requests waiting for a copy "
                f"(serving.max_queue_per_model = {self.settings.max_queue_per_model}). Retry shortly, or raise "
                "max_copies / max_concurrency_per_copy so more requests are served at once.",
                retry_after_seconds=1.0,
            )
        waiter = Waiter(asyncio.get_running_loop().create_future(), priority, exclude)
        pool.queue.push(waiter)
        pool.note_demand()
        self._poke()
        window = asyncio.timeout(wait_limit)
        try:
            async with window:
                return await waiter.future
        except BaseException as exc:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(pool, future.result())  # served just as the request gave up
            else:
                pool.queue.abandon(waiter)
            if isinstance(exc, TimeoutError) and window.expired():
                raise ServiceUnavailableError(
                    f"No copy of '{pool.model.name}' became ready within {wait_limit:g} s; it is still starting. "
                    "Retry shortly, or pre-start copies with `outcrop warm`.",
                    retry_after_seconds=self.settings.cold_start_retry_after_seconds,
                ) from None
            raise

    def _release(self, pool: _Pool, copy: ModelCopy) -> None:
        copy.in_flight -= 1
        copy.last_used_at, copy.last_used_mono = time.time(), time.monotonic()
        self._dispatch(pool)

    def _dispatch(self, pool: _Pool) -> None:
        """Hand free slots to waiting requests, highest priority first."""
        if pool.queue.depth == 0:
            return
        cap = pool.spec.max_concurrency_per_copy
        for waiter in pool.queue.pending():
            copy = choose_copy(pool.copies.values(), cap, waiter.exclude)
            if copy is None:
                if not waiter.exclude:
                    break
                continue
            copy.in_flight += 1
            pool.queue.serve(waiter, copy)

    async def _post_once(
        self, pool: _Pool, copy: ModelCopy, path: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        assert copy.client is not None
        try:
            status, body = await copy.client.post_json(path, payload)
        except CopyTransportError as exc:
            self._suspect(pool, copy, exc)
            raise _CopyUnusable(str(exc)) from None
        if status == 200:
            try:
                result = json.loads(body)
            except ValueError:
                result = None
            if not isinstance(result, dict):
                raise ModelFailedError(
                    f"The copy of '{pool.model.name}' answered with a body that is not a JSON object; "
                    "send the request again.",
                    model_id=pool.model.id,
                )
            return result
        raise self._response_error(pool, status, body)

    async def _open_stream(
        self, pool: _Pool, copy: ModelCopy, path: str, payload: dict[str, Any]
    ) -> CopyResponse:
        assert copy.client is not None
        try:
            response = await copy.client.request("POST", path, payload)
            if response.status_code == 200:
                return response
            body = await response.aread()
        except CopyTransportError as exc:
            self._suspect(pool, copy, exc)
            raise _CopyUnusable(str(exc)) from None
        raise self._response_error(pool, response.status_code, body)

    def _response_error(self, pool: _Pool, status: int, body: bytes) -> Exception:
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = None
        parsed = CopyErrorResponse.parse(payload)
        text = body[:300].decode("utf-8", errors="replace")
        message = (parsed.error.message if parsed else "") or text or f"HTTP {status}"
        if status in (429, 503):
            return _CopyUnusable(message, status_code=status)
        if 400 <= status < 500:
            param = parsed.error.param if parsed else None
            code = parsed.error.code if parsed else None
            return InvalidRequestError(message, param=param, code=code, model_id=pool.model.id)
        return ModelFailedError(
            f"The copy of '{pool.model.name}' failed while answering (HTTP {status}): {message}",
            original_status_code=status,
            model_id=pool.model.id,
        )

    def _unusable_error(self, pool: _Pool, exc: _CopyUnusable) -> OutcropError:
        if exc.status_code is not None:
            return ServiceUnavailableError(
                f"The copies of '{pool.model.name}' are busy or shutting down (HTTP {exc.status_code}: "
                f"{exc.detail}); retry shortly.",
                retry_after_seconds=1.0,
            )
        return ModelFailedError(
            f"The copy of '{pool.model.name}' stopped answering ({exc.detail}) and the retry on another copy "
            "failed too; send the request again.",
            model_id=pool.model.id,
        )

    def _timeout_error(self, pool: _Pool, limit: float) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"Model '{pool.model.name}' did not answer within the request's deadline of {limit:g} s. Lower "
            "max_tokens, send the request again, or allow a longer deadline.",
            model_id=pool.model.id,
        )

    def _suspect(self, pool: _Pool, copy: ModelCopy, exc: BaseException) -> None:
        """A request to ``copy`` failed at the transport level: fail it now if its process is gone."""
        launched = copy.launched
        code = launched.exit_code() if launched else None
        if code is not None:
            self._fail_copy(pool, copy, f"the process exited with code {code}{_tail(launched)}")
        else:
            copy.suspect = True
            copy.wake.set()  # let its health check look at once

    # ------------------------------------------------------------------ copies

    def _start_copy(self, pool: _Pool, *, cold: bool) -> ModelCopy:
        """Create a Starting copy and its lifecycle task, or raise ServiceUnavailableError (backoff, no room)."""
        now = time.monotonic()
        if now < pool.next_start_at:
            wait = pool.next_start_at - now
            raise ServiceUnavailableError(
                f"Copies of '{pool.model.name}' failed {pool.consecutive_failures} time(s) in a row (last: "
                f"{pool.last_failure}); the next start is allowed in {wait:.1f} s. Fix the cause, or retry later.",
                retry_after_seconds=max(1.0, wait),
            )
        evict = self._make_room(pool)
        copy = ModelCopy(
            copy_id=f"copy-{secrets.token_hex(4)}",
            model_id=pool.model.id,
            model_name=pool.model.name,
            memory_estimate_bytes=pool.model.memory_estimate_bytes,
            cold_start=cold,
        )
        pool.copies[copy.copy_id] = copy
        for victim_pool, victim in evict:
            self._begin_stop(victim_pool, victim, f"making room for a copy of '{pool.model.name}'")
        waits = [self._lifecycles[v.copy_id] for _, v in evict if v.copy_id in self._lifecycles]
        task = asyncio.create_task(self._lifecycle(pool, copy, waits), name=f"outcrop-{copy.copy_id}")
        self._lifecycles[copy.copy_id] = task
        task.add_done_callback(lambda _t: self._lifecycles.pop(copy.copy_id, None))
        log.info(
            "starting a copy",
            extra={"model": pool.model.name, "copy_id": copy.copy_id, "cold_start": cold},
        )
        return copy

    def _make_room(self, pool: _Pool) -> list[tuple[_Pool, ModelCopy]]:
        """The idle copies of other models to stop so a copy of ``pool`` fits; or ServiceUnavailableError."""
        needed = pool.model.memory_estimate_bytes
        all_copies = [(p, c) for p in self._pools.values() for c in p.copies.values()]
        free = math.inf
        available = available_memory_bytes()
        if available is not None:
            # Starting copies have not allocated their memory yet: count their estimate as taken.
            starting = sum(c.memory_estimate_bytes for _, c in all_copies if c.status is CopyStatus.STARTING)
            free = available - self.settings.memory_reserve_bytes - starting
        if self.settings.memory_limit_bytes is not None:
            used = sum(c.memory_estimate_bytes for _, c in all_copies if not c.status.is_terminal())
            free = min(free, self.settings.memory_limit_bytes - used)
        if free == math.inf:
            return []
        candidates: dict[str, tuple[_Pool, ModelCopy]] = {}
        for p, c in all_copies:
            if (
                p is not pool
                and c.status is CopyStatus.READY
                and c.in_flight == 0
                and p.queue.depth == 0
                and len(p.live()) > p.spec.min_copies
            ):
                candidates[c.copy_id] = (p, c)
        plan = plan_fit(
            needed,
            int(free),
            [
                EvictionCandidate(c.copy_id, p.model.name, c.memory_estimate_bytes, c.last_used_mono or 0.0)
                for p, c in candidates.values()
            ],
        )
        if not plan.fits:
            where = (
                "the memory budget (serving.memory_limit_bytes)"
                if self.settings.memory_limit_bytes
                else (
                    f"free memory (MemAvailable minus serving.memory_reserve_bytes {gib(self.settings.memory_reserve_bytes)})"
                )
            )
            raise ServiceUnavailableError(
                f"A copy of '{pool.model.name}' needs about {gib(needed)} but {where} leaves {gib(max(0, int(free)))}"
                f", and stopping idle copies of other models would free only {gib(plan.reclaimable_bytes)}. "
                "Retry when other models are idle, stop copies (`outcrop copies`), or add memory.",
                retry_after_seconds=max(self.settings.cold_start_retry_after_seconds, 5.0),
            )
        if plan.evict:
            log.info(
                "stopping idle copies to make room",
                extra={"model": pool.model.name, "copies": list(plan.evict)},
            )
        return [candidates[i] for i in plan.evict]

    def _begin_stop(self, pool: _Pool, copy: ModelCopy, reason: str) -> None:
        if copy.transition(CopyStatus.DRAINING):
            log.info(
                "stopping a copy", extra={"model": pool.model.name, "copy_id": copy.copy_id, "reason": reason}
            )
            copy.wake.set()

    def _fail_copy(self, pool: _Pool, copy: ModelCopy, reason: str) -> None:
        if copy.status.is_terminal():
            return
        was_ready = copy.ready_at is not None
        copy.transition(CopyStatus.FAILED)
        copy.failure = reason
        copy.wake.set()
        if was_ready:
            pool.copy_failures += 1
        else:
            pool.start_failures += 1
        pool.consecutive_failures += 1
        backoff = min(
            self.settings.restart_backoff_initial_seconds * 2 ** (pool.consecutive_failures - 1),
            self.settings.restart_backoff_max_seconds,
        )
        pool.next_start_at = time.monotonic() + backoff
        pool.last_failure = f"copy {copy.copy_id}: {reason}"
        log.warning(
            "copy failed",
            extra={"model": pool.model.name, "copy_id": copy.copy_id, "reason": reason, "backoff_s": backoff},
        )
        if not pool.live() and pool.queue.depth:
            pool.queue.fail_all(
                ServiceUnavailableError(
                    f"The copy of '{pool.model.name}' failed ({reason}); Outcrop starts another in "
                    f"{backoff:.1f} s. Retry then.",
                    retry_after_seconds=max(1.0, backoff),
                )
            )
        self._poke()

    async def _lifecycle(self, pool: _Pool, copy: ModelCopy, evicting: list[asyncio.Task[None]]) -> None:
        """Launch -> wait for health -> Ready -> health checks -> drain -> Stopped (or Failed)."""
        try:
            if evicting:
                await asyncio.wait(evicting, timeout=self.settings.drain_timeout_seconds + KILL_GRACE_SECONDS)
            if copy.status is CopyStatus.STARTING:
                await self._launch(pool, copy)
            if copy.status is CopyStatus.STARTING:
                await self._wait_healthy(pool, copy)
            if copy.status is CopyStatus.READY:
                await self._watch(pool, copy)
        except asyncio.CancelledError:
            if copy.launched is not None:
                copy.launched.kill()
            raise
        except OutcropError as exc:
            self._fail_copy(pool, copy, exc.message)
        except Exception as exc:  # a launcher or registry bug must not leave a copy half-started
            log.exception("copy lifecycle crashed", extra={"copy_id": copy.copy_id})
            self._fail_copy(pool, copy, f"{type(exc).__name__}: {exc}")
        try:
            await self._shut_down(pool, copy)
        finally:
            pool.copies.pop(copy.copy_id, None)
            if copy.client is not None:
                await copy.client.aclose()
            self._dispatch(pool)
            self._poke()

    async def _model_folder(self, pool: _Pool) -> Path:
        """The model's materialised folder, made once per model and shared by its copies.

        ``Registry.model_folder`` rebuilds the folder in place, which must not happen twice at
        once nor under a copy that is still loading from it.
        """
        model_id = pool.model.id
        async with self._folder_locks.setdefault(model_id, asyncio.Lock()):
            folder = self._folders.get(model_id)
            if folder is None or not (folder / MANIFEST_NAME).is_file():
                try:
                    folder = await asyncio.to_thread(self.registry.model_folder, model_id)
                except NotFoundError:
                    raise ServiceUnavailableError(
                        f"Model '{pool.model.name}' was deleted while its copy was starting.",
                        retry_after_seconds=1.0,
                    ) from None
                self._folders[model_id] = folder
            return folder

    async def _launch(self, pool: _Pool, copy: ModelCopy) -> None:
        model_dir = await self._model_folder(pool)
        if copy.status is not CopyStatus.STARTING:
            return
        host = self.settings.copy_host
        request = LaunchRequest(
            copy_id=copy.copy_id,
            model_id=pool.model.id,
            served_name=pool.model.name,
            model_dir=model_dir,
            host=host,
            port=free_port(host),
            log_path=self.config.resolved_data_dir / "logs" / "copies" / f"{copy.copy_id}.log",
        )
        copy.launched = await asyncio.to_thread(self.launcher.launch, request)
        copy.client = CopyClient(copy.launched.host, copy.launched.port)

    async def _wait_healthy(self, pool: _Pool, copy: ModelCopy) -> None:
        launched, client = copy.launched, copy.client
        assert launched is not None and client is not None
        limit = self.settings.copy_start_timeout_seconds
        deadline = time.monotonic() + limit
        while copy.status is CopyStatus.STARTING:
            code = launched.exit_code()
            if code is not None:
                raise ServiceUnavailableError(
                    f"the copy exited with code {code} before it was ready{_tail(launched)}"
                )
            if await self._healthy(client, launched) and copy.transition(CopyStatus.READY):
                self._on_ready(pool, copy)
                return
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"the copy was not healthy after {limit:g} s (serving.copy_start_timeout_seconds){_tail(launched)}"
                )
            await _wait_event(copy.wake, STARTUP_POLL_SECONDS)

    async def _healthy(self, client: CopyClient, launched: LaunchedCopy) -> bool:
        try:
            async with asyncio.timeout(self.settings.health_timeout_seconds):
                status, _ = await client.get(launched.health_path)
        except (CopyTransportError, TimeoutError):
            return False
        return status == 200

    def _on_ready(self, pool: _Pool, copy: ModelCopy) -> None:
        pool.consecutive_failures = 0
        pool.next_start_at = 0.0
        took = time.monotonic() - copy.started_mono
        if copy.cold_start:
            pool.cold_starts += 1
            pool.cold_start_seconds_sum += took
            pool.cold_start_seconds_last = took
        log.info(
            "copy ready",
            extra={
                "model": pool.model.name,
                "copy_id": copy.copy_id,
                "seconds": round(took, 3),
                "url": copy.url,
            },
        )
        self._dispatch(pool)

    async def _watch(self, pool: _Pool, copy: ModelCopy) -> None:
        """Health checks while Ready; a dead or unresponsive copy is Failed (and replaced by demand)."""
        launched, client = copy.launched, copy.client
        assert launched is not None and client is not None
        misses = 0
        while copy.status is CopyStatus.READY:
            await _wait_event(copy.wake, self.settings.health_interval_seconds)
            if copy.status is not CopyStatus.READY:
                return
            if copy.suspect:  # a request just lost its connection: the process may be exiting
                copy.suspect = False
                for _ in range(SUSPECT_EXIT_POLLS):
                    if launched.exit_code() is not None:
                        break
                    await asyncio.sleep(0.05)
            code = launched.exit_code()
            if code is not None:
                self._fail_copy(pool, copy, f"the process exited with code {code}{_tail(launched)}")
                return
            healthy = await self._healthy(client, launched)
            misses = 0 if healthy else misses + 1
            if misses >= self.settings.health_failures_before_failed:
                self._fail_copy(
                    pool, copy, f"{misses} health checks of {launched.health_path} failed in a row"
                )
                return

    async def _shut_down(self, pool: _Pool, copy: ModelCopy) -> None:
        """Stop the copy's process: SIGTERM (it drains), SIGKILL after the drain bound."""
        launched = copy.launched
        if launched is not None and launched.exit_code() is None:
            # A failed copy is declared dead: no drain. A stopping one finishes its requests.
            drain = 0.0 if copy.status is CopyStatus.FAILED else self.settings.drain_timeout_seconds
            launched.terminate()
            deadline = time.monotonic() + drain
            while launched.exit_code() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if launched.exit_code() is None:
                if drain:
                    log.warning("copy did not stop in time; killing it", extra={"copy_id": copy.copy_id})
                launched.kill()
                deadline = time.monotonic() + KILL_GRACE_SECONDS
                while launched.exit_code() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if launched.exit_code() is None:
                    log.error("copy survived SIGKILL", extra={"copy_id": copy.copy_id, "pid": launched.pid})
        if not copy.status.is_terminal() and not copy.transition(CopyStatus.STOPPED):
            # Starting/Ready copies reach Stopped only through Draining.
            copy.transition(CopyStatus.DRAINING)
            copy.transition(CopyStatus.STOPPED)

    # ------------------------------------------------------------------ autoscaler executor

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _autoscale_loop(self) -> None:
        assert self._wake is not None
        while True:
            await _wait_event(self._wake, self.settings.autoscaler_interval_seconds)
            try:
                self.autoscale_once()
            except Exception:  # the loop must survive a bug in one round
                log.exception("autoscaler round failed")

    def autoscale_once(self) -> None:
        """One autoscaler round over every model (the loop calls this; tests may too)."""
        now = time.monotonic()
        for pool in list(self._pools.values()):
            pool.sample(now)
            load = ModelLoad(
                model_id=pool.model.id,
                in_flight=pool.in_flight(),
                queued=pool.queue.depth,
                peak_demand_in_window=pool.peak_demand(now, pool.spec.idle_seconds_before_scale_down),
            )
            views = [
                CopyView(
                    copy_id=c.copy_id,
                    status=c.status,
                    in_flight=c.in_flight,
                    started_at=c.started_mono,
                    ready_at=c.ready_mono,
                    last_used_at=c.last_used_mono,
                )
                for c in pool.copies.values()
            ]
            for decision in decide(load, views, pool.spec, now):
                if decision.action is ScaleAction.START:
                    if now < pool.next_start_at:
                        break
                    try:
                        self._start_copy(pool, cold=not pool.ready())
                    except ServiceUnavailableError as exc:
                        log.info("cannot scale up", extra={"model": pool.model.name, "reason": exc.message})
                        if pool.queue.depth and not pool.live():
                            pool.queue.fail_all(exc)
                        break
                elif decision.copy_id in pool.copies:
                    self._begin_stop(pool, pool.copies[decision.copy_id], decision.reason)

    async def _warm_min_copies(self) -> None:
        """At start: bring every model with ``min_copies`` > 0 up to it."""
        names: list[str] = []
        if self.settings.defaults.min_copies > 0:
            token: str | None = None
            while True:
                page = await asyncio.to_thread(self.registry.list_models, ListFilter(next_token=token))
                names += [m.name for m in page.items]
                token = page.next_token
                if not token:
                    break
        names += [name for name, spec in self.settings.model_overrides.items() if spec.min_copies > 0]
        for name in dict.fromkeys(names):
            try:
                model = await self._resolve(name)
            except NotFoundError:
                log.warning(
                    "serving.model_overrides names a model that does not exist", extra={"model": name}
                )
                continue
            self._pool(model)
        self._poke()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _tail(launched: LaunchedCopy | None) -> str:
    if launched is None:
        return ""
    tail = launched.log_tail()
    return f"; its last output: {tail}" if tail else f"; see {launched.log_path}"


def _sse_data(line: str) -> Any:
    """The JSON of an SSE ``data:`` line, the string ``"[DONE]"``, or None for other lines."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return data
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Sleep up to ``timeout`` seconds or until ``event`` is set; clears it."""
    if not event.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
    event.clear()
