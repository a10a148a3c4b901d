"""The serving service: what the API surfaces call to run a request on a model copy.

Per model (a :class:`~outcrop.serving.pool.ModelPool`): a bounded wait queue (online before
batch), the least-outstanding-requests choice among ready copies under a per-copy cap,
deadlines, cold starts, one retry on another copy when a copy dies before answering. The
copies themselves are started, health-checked and stopped by the
:class:`~outcrop.serving.fleet.Fleet`; one autoscaler task carries out
:func:`outcrop.serving.autoscaler.decide`. Everything runs on one event loop, so the
bookkeeping needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from outcrop.registry.service import Registry
from outcrop.serving.autoscaler import CopyView, ModelLoad, ScaleAction, decide
from outcrop.serving.copies import CopyInfo, CopyStatus, ModelCopy
from outcrop.serving.copyclient import CopyResponse, CopyTransportError
from outcrop.serving.fleet import KILL_GRACE_SECONDS, STARTUP_POLL_SECONDS, Fleet, wait_event
from outcrop.serving.pool import ModelPool
from outcrop.serving.protocol import CopyErrorResponse
from outcrop.serving.routing import Priority, Waiter, choose_copy, slot_cap, with_priority
from outcrop.store.imports import ImportedModel, ListFilter

__all__ = ["ColdStartPolicy", "CopyInfo", "CopyStatus", "Priority", "Serving"]

log = logging.getLogger("outcrop.serving")


@dataclass(frozen=True)
class ColdStartPolicy:
    """What a request does when its model has no ready copy (one is started either way)."""

    wait: bool  # True: hold the request until a copy is ready; False: ModelNotReadyError at once
    max_wait_seconds: float  # bounded wait; then ServiceUnavailableError(retry_after_seconds=...)
    # True when the caller chose ``wait`` explicitly for this request; otherwise a model's
    # ``cold_start_wait`` override (serving.model_overrides) replaces the surface's default.
    from_request: bool = False


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
        self._pools: dict[str, ModelPool] = {}
        self.fleet = Fleet(config, registry, self._pools, self._on_change)
        self._resolved: dict[str, tuple[float, ImportedModel]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
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
        self._spawn(self.fleet.sync_loop(self._pool))  # a fleet shared by gateways: leases, adoption

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
        await self.fleet.stop_all("Outcrop is shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=KILL_GRACE_SECONDS)

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
        payload = with_priority({**body, "model": resolved.name}, priority)
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
        payload = with_priority({**body, "model": resolved.name, "stream": True}, priority)
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
                        self.fleet.suspect(pool, copy, exc)
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
                    if "model" in chunk:
                        chunk["model"] = (
                            pool.model.name
                        )  # what the caller asked for, whatever the copy calls it
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
            self.fleet.start_copy(pool, cold=False)
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
            self.fleet.begin_stop(pool, copy, "the model is being removed")
        await self.fleet.wait_for([c.copy_id for c in stopping])
        if not pool.copies:
            self._pools.pop(model_id, None)
        self.fleet.forget_folder(model_id)
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
        """``serving.defaults`` with the fields a ``serving.model_overrides`` entry (name or id) sets.

        A ``min_copies`` above ``max_copies`` raises ``max_copies`` to it (keeping copies warm wins).
        """
        spec = self.settings.defaults
        override = self.settings.model_overrides.get(model.name) or self.settings.model_overrides.get(
            model.id
        )
        if override is not None:
            merged = spec.model_dump()
            merged.update({k: getattr(override, k) for k in override.model_fields_set})
            spec = ModelServingSpec.model_validate(merged)
        if spec.min_copies > spec.max_copies:
            spec = spec.model_copy(update={"max_copies": spec.min_copies})
        return spec

    # ------------------------------------------------------------------ request path internals

    def _policy(self, pool: ModelPool, policy: ColdStartPolicy) -> ColdStartPolicy:
        if policy.from_request or pool.spec.cold_start_wait is None:
            return policy
        return ColdStartPolicy(pool.spec.cold_start_wait, policy.max_wait_seconds, from_request=True)

    async def resolve(self, name_or_arn: str) -> ImportedModel:
        """``registry.get_model`` cached for ``serving.model_cache_seconds`` (NotFoundError if unknown).

        The request path resolves through this cache; API routes can too, to skip a database
        query (~0.3-1 ms) per request.
        """
        return await self._resolve(name_or_arn)

    def known_model_name(self, name_or_arn: str) -> str | None:
        """The name of a model this gateway resolved before (no query), else None: a bounded metrics label."""
        hit = self._resolved.get(name_or_arn)
        return hit[1].name if hit is not None else None

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

    def _pool(self, model: ImportedModel) -> ModelPool:
        pool = self._pools.get(model.id)
        if pool is None:
            pool = self._pools[model.id] = ModelPool(model=model, spec=self.spec_for(model))
        return pool

    async def _acquire(
        self, pool: ModelPool, priority: Priority, policy: ColdStartPolicy, exclude: frozenset[str]
    ) -> ModelCopy:
        """A copy slot for one request: at once, after a wait in the queue, or an error."""
        if self._closing:
            raise ServiceUnavailableError("Outcrop is shutting down; retry against another server.")
        if (
            exclude
            and not any(c.copy_id not in exclude for c in pool.live())
            and not any(c.suspect for c in pool.live() if c.copy_id in exclude)
        ):
            exclude = frozenset()  # nothing else to try: the same copy once more beats failing
        # A suspect copy (its connection just broke) is not tried again: the request waits for its
        # health check to clear it, or for the replacement started when it is failed.
        cap = self._slot_cap(pool, priority)
        if not pool.queue.has_waiter_at_or_before(priority):  # online passes waiting batch records
            copy = choose_copy(pool.copies.values(), cap, exclude)
            if copy is not None:
                copy.in_flight += 1
                pool.note_demand()
                return copy
        wait_limit: float | None = None
        if not any(c.copy_id not in exclude for c in pool.ready()):
            if not pool.live():
                try:
                    self.fleet.start_copy(pool, cold=True)
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

    def _release(self, pool: ModelPool, copy: ModelCopy) -> None:
        copy.in_flight -= 1
        copy.last_used_at, copy.last_used_mono = time.time(), time.monotonic()
        self._dispatch(pool)

    def _dispatch(self, pool: ModelPool) -> None:
        """Hand free slots to waiting requests, highest priority first."""
        if pool.queue.depth == 0:
            return
        for waiter in pool.queue.pending():
            copy = choose_copy(pool.copies.values(), self._slot_cap(pool, waiter.priority), waiter.exclude)
            if copy is None:
                if not waiter.exclude:
                    break
                continue
            copy.in_flight += 1
            pool.queue.serve(waiter, copy)

    def _slot_cap(self, pool: ModelPool, priority: Priority) -> int:
        reserved = self.config.batch.online_reserved_slots_per_copy
        return slot_cap(priority, pool.spec.max_concurrency_per_copy, reserved)

    async def _post_once(
        self, pool: ModelPool, copy: ModelCopy, path: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        assert copy.client is not None
        try:
            status, body = await copy.client.post_json(path, payload)
        except CopyTransportError as exc:
            self.fleet.suspect(pool, copy, exc)
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
            if "model" in result:
                result["model"] = pool.model.name  # what the caller asked for, whatever the copy calls it
            return result
        raise self._response_error(pool, status, body)

    async def _open_stream(
        self, pool: ModelPool, copy: ModelCopy, path: str, payload: dict[str, Any]
    ) -> CopyResponse:
        assert copy.client is not None
        try:
            response = await copy.client.request("POST", path, payload)
            if response.status_code == 200:
                return response
            body = await response.aread()
        except CopyTransportError as exc:
            self.fleet.suspect(pool, copy, exc)
            raise _CopyUnusable(str(exc)) from None
        raise self._response_error(pool, response.status_code, body)

    def _response_error(self, pool: ModelPool, status: int, body: bytes) -> Exception:
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

    def _unusable_error(self, pool: ModelPool, exc: _CopyUnusable) -> OutcropError:
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

    def _timeout_error(self, pool: ModelPool, limit: float) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"Model '{pool.model.name}' did not answer within the request's deadline of {limit:g} s. Lower "
            "max_tokens, send the request again, or allow a longer deadline.",
            model_id=pool.model.id,
        )

    # ------------------------------------------------------------------ copies

    # ------------------------------------------------------------------ autoscaler executor

    def _on_change(self, pool: ModelPool) -> None:
        self._dispatch(pool)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _autoscale_loop(self) -> None:
        assert self._wake is not None
        while True:
            await wait_event(self._wake, self.settings.autoscaler_interval_seconds)
            try:
                self.autoscale_once()
            except Exception:  # the loop must survive a bug in one round
                log.exception("autoscaler round failed")

    def autoscale_once(self) -> None:
        """One autoscaler round over every model (the loop calls this; tests may too)."""
        now = time.monotonic()
        for pool in list(self._pools.values()):
            pool.sample(now)
            if not self.fleet.may_autoscale():
                continue  # another gateway scales this shared fleet (it holds the autoscaler lease)
            window = pool.spec.idle_seconds_before_scale_down
            remote_now, remote_peak = self.fleet.remote_demand(pool.model.id, window)  # other gateways'
            load = ModelLoad(
                model_id=pool.model.id,
                in_flight=pool.in_flight() + remote_now,
                queued=pool.queue.depth,
                peak_demand_in_window=max(pool.peak_demand(now, window), remote_peak),
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
                        self.fleet.start_copy(pool, cold=not pool.ready())
                    except ServiceUnavailableError as exc:
                        log.info("cannot scale up", extra={"model": pool.model.name, "reason": exc.message})
                        if pool.queue.depth and not pool.live():
                            pool.queue.fail_all(exc)
                        break
                elif decision.copy_id in pool.copies:
                    self.fleet.begin_stop(pool, pool.copies[decision.copy_id], decision.reason)

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
