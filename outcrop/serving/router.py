"""Where a request picks a copy: the router, the request path of the serving layer.

For one request: resolve the model name or ARN (cached), take a slot on the model's
least-loaded ready copy (:func:`~outcrop.serving.routing.choose_copy`, under the per-copy
cap) or wait in the model's bounded queue (online before batch), send the request, release
the slot and hand it to the next waiter (dispatch). A copy that dies before answering is
retried once on another copy; deadlines bound everything.

When the model has no ready copy the router asks the controller for a cold start
(:meth:`ColdStarts.cold_start`) and then, by the request's :class:`ColdStartPolicy`, holds
the request until a copy is ready or answers ModelNotReady at once. It never starts, stops
or health-checks copies itself (the controller and the fleet do), and never decides scaling.

The router owns the wait queues, the demand it measured (which the controller and the
gateway coordination read) and each copy record's ``in_flight`` / ``last_used`` counters.
Everything runs on one event loop, so the bookkeeping needs no locks.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from outcrop.config import OutcropConfig
from outcrop.errors import (
    InvalidRequestError,
    ModelFailedError,
    ModelNotReadyError,
    ModelTimeoutError,
    OutcropError,
    ServiceUnavailableError,
)
from outcrop.registry.service import Registry
from outcrop.serving.copies import ModelCopy
from outcrop.serving.copyclient import CopyResponse, CopyTransportError
from outcrop.serving.fleet import Fleet
from outcrop.serving.model import ServedModel
from outcrop.serving.protocol import CopyErrorResponse
from outcrop.serving.routing import (
    Priority,
    Waiter,
    WaitQueue,
    check_model_kind,
    choose_copy,
    copy_request,
    slot_cap,
)
from outcrop.store.imports import ImportedModel


@dataclass(frozen=True)
class ColdStartPolicy:
    """What a request does when its model has no ready copy (one is started either way)."""

    wait: bool  # True: hold the request until a copy is ready; False: ModelNotReadyError at once
    max_wait_seconds: float  # bounded wait; then ServiceUnavailableError(retry_after_seconds=...)
    # True when the caller chose ``wait`` explicitly for this request; otherwise a model's
    # ``cold_start_wait`` override (serving.model_overrides) replaces the surface's default.
    from_request: bool = False


class ColdStarts(Protocol):
    """What the router asks of the controller (:class:`~outcrop.serving.controller.Controller`)."""

    def track(self, model: ImportedModel) -> ServedModel:
        """Serve (and scale) ``model``; its spec."""

    def cold_start(self, served: ServedModel, policy: ColdStartPolicy) -> None:
        """No copy of ``served`` is live: start one, or let the request wait out a restart backoff,
        or raise ServiceUnavailableError."""

    def poke(self) -> None:
        """Demand changed: run a scaling round soon."""


class _CopyUnusable(Exception):
    """Internal: the chosen copy could not take the request (died, refused); try another once."""

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


@dataclass(eq=False)
class Lane:
    """One model's share of the router: its wait queue and the demand measured on it."""

    served: ServedModel
    queue: WaitQueue = field(default_factory=WaitQueue)
    demand_samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    demand_bucket: int = 0  # peak demand (in flight + queued) since the last sample


class Router:
    """Runs requests on copies of imported models: acquire a slot, send, release, dispatch."""

    def __init__(
        self, config: OutcropConfig, registry: Registry, fleet: Fleet, cold_starts: ColdStarts
    ) -> None:
        self.config = config
        self.settings = config.serving
        self.registry = registry
        self.fleet = fleet  # read: the copies to choose from; told: a copy that lost its connection
        self.cold_starts = cold_starts
        self._lanes: dict[str, Lane] = {}  # model id -> lane
        self._resolved: dict[str, tuple[float, ImportedModel]] = {}
        self._closing = False

    # ------------------------------------------------------------------ models

    async def resolve(self, name_or_arn: str) -> ImportedModel:
        """``registry.get_model`` cached for ``serving.model_cache_seconds`` (NotFoundError if unknown).

        The request path resolves through this cache; API routes can too, to skip a database
        query (~0.3-1 ms) per request.
        """
        now = time.monotonic()
        hit = self._resolved.get(name_or_arn)
        if hit is not None and hit[0] > now:
            return hit[1]
        model = await asyncio.to_thread(self.registry.get_model, name_or_arn)
        if len(self._resolved) > 4096:
            self._resolved.clear()
        self._resolved[name_or_arn] = (now + self.settings.model_cache_seconds, model)
        return model

    def known_model_name(self, name_or_arn: str) -> str | None:
        """The name of a model this gateway resolved before (no query), else None: a bounded metrics label."""
        hit = self._resolved.get(name_or_arn)
        return hit[1].name if hit is not None else None

    async def _lane(self, name_or_arn: str) -> Lane:
        served = self.cold_starts.track(await self.resolve(name_or_arn))
        lane = self._lanes.get(served.id)
        if lane is None or lane.served is not served:
            lane = self._lanes[served.id] = Lane(served)
        return lane

    def forget_model(self, model_id: str) -> None:
        """The model is being removed: fail its waiting requests; forget its name."""
        self._resolved = {k: v for k, v in self._resolved.items() if v[1].id != model_id}
        lane = self._lanes.pop(model_id, None)
        if lane is not None:
            lane.queue.fail_all(
                ServiceUnavailableError(
                    f"Model '{lane.served.name}' is being removed; its copies are stopping."
                )
            )

    def close(self, exc: BaseException) -> None:
        """Refuse new requests and fail the waiting ones with ``exc`` (the service is stopping)."""
        self._closing = True
        for lane in self._lanes.values():
            lane.queue.fail_all(exc)

    def reopen(self) -> None:
        self._closing = False

    # ------------------------------------------------------------------ what the controller reads and asks

    def queued(self, model_id: str) -> int:
        lane = self._lanes.get(model_id)
        return lane.queue.depth if lane is not None else 0

    def in_flight(self, model_id: str) -> int:
        return sum(c.in_flight for c in self.fleet.live(model_id))

    def sample_demand(self, now: float) -> None:
        """Close the current demand bucket of every model (the controller calls this once a round)."""
        for model_id, lane in self._lanes.items():
            lane.demand_samples.append((now, lane.demand_bucket))
            lane.demand_bucket = self.in_flight(model_id) + lane.queue.depth

    def peak_demand(self, model_id: str, now: float, window_seconds: float) -> int:
        """The most requests in flight + queued at once over the last ``window_seconds``."""
        lane = self._lanes.get(model_id)
        if lane is None:
            return 0
        samples = lane.demand_samples
        while samples and samples[0][0] < now - window_seconds:
            samples.popleft()
        return max([lane.demand_bucket, *(d for _, d in samples)])

    def recent_demand(self, horizon: float) -> dict[str, int]:
        """Model id -> peak demand since ``horizon`` (monotonic), for the models with any (gateway coordination)."""
        demand = {}
        for model_id, lane in self._lanes.items():
            recent = max(lane.demand_bucket, self.in_flight(model_id) + lane.queue.depth)
            recent = max([recent, *(d for t, d in lane.demand_samples if t >= horizon)])
            if recent:
                demand[model_id] = recent
        return demand

    def fail_waiting(self, model_id: str, exc: BaseException) -> None:
        """Fail every request waiting for a copy of the model with ``exc`` (no copy will come soon)."""
        lane = self._lanes.get(model_id)
        if lane is not None:
            lane.queue.fail_all(exc)

    def dispatch(self, model_id: str) -> None:
        """Hand free slots of the model's copies to waiting requests, highest priority first."""
        lane = self._lanes.get(model_id)
        if lane is not None:
            self._dispatch(lane)

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
        lane = await self._lane(model)
        check_model_kind(lane.served.model, path)
        payload = copy_request(body, model=lane.served.name, priority=priority, stream=False)
        policy = self._policy(lane.served, cold_start)
        try:
            async with asyncio.timeout_at(deadline):
                exclude: frozenset[str] = frozenset()
                for attempt in (0, 1):
                    copy = await self._acquire(lane, priority, policy, exclude)
                    try:
                        return await self._post_once(lane, copy, path, payload)
                    except _CopyUnusable as exc:
                        if attempt == 1:
                            raise self._unusable_error(lane, exc) from None
                        exclude = frozenset({copy.copy_id})
                    finally:
                        self._release(lane, copy)
        except TimeoutError:
            raise self._timeout_error(lane, limit) from None
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
        lane = await self._lane(model)
        check_model_kind(lane.served.model, path)
        payload = copy_request(body, model=lane.served.name, priority=priority, stream=True)
        policy = self._policy(lane.served, cold_start)
        exclude: frozenset[str] = frozenset()
        started = False
        for attempt in (0, 1):
            try:
                async with asyncio.timeout_at(deadline):
                    copy = await self._acquire(lane, priority, policy, exclude)
            except TimeoutError:
                raise self._timeout_error(lane, limit) from None
            response: CopyResponse | None = None
            try:
                try:
                    async with asyncio.timeout_at(deadline):
                        response = await self._open_stream(lane, copy, path, payload)
                except _CopyUnusable as exc:
                    if attempt == 1:
                        raise self._unusable_error(lane, exc) from None
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
                        self.fleet.suspect(copy, exc)
                        if started or attempt == 1:
                            raise ModelFailedError(
                                f"The copy of '{lane.served.name}' stopped while streaming "
                                f"({exc}); send the request again.",
                                model_id=lane.served.id,
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
                            f"The copy of '{lane.served.name}' failed while streaming: {error.error.message}",
                            model_id=lane.served.id,
                        )
                    started = True
                    if "model" in chunk:
                        chunk["model"] = (
                            lane.served.name
                        )  # what the caller asked for, whatever the copy calls it
                    yield chunk
            except TimeoutError:
                raise self._timeout_error(lane, limit) from None
            finally:
                if response is not None:
                    await response.aclose()
                self._release(lane, copy)

    # ------------------------------------------------------------------ request path internals

    def _policy(self, served: ServedModel, policy: ColdStartPolicy) -> ColdStartPolicy:
        if policy.from_request or served.spec.cold_start_wait is None:
            return policy
        return ColdStartPolicy(served.spec.cold_start_wait, policy.max_wait_seconds, from_request=True)

    def _note_demand(self, lane: Lane) -> None:
        lane.demand_bucket = max(lane.demand_bucket, self.in_flight(lane.served.id) + lane.queue.depth)

    async def _acquire(
        self, lane: Lane, priority: Priority, policy: ColdStartPolicy, exclude: frozenset[str]
    ) -> ModelCopy:
        """A copy slot for one request: at once, after a wait in the queue, or an error."""
        if self._closing:
            raise ServiceUnavailableError("Outcrop is shutting down; retry against another server.")
        served = lane.served
        copies = self.fleet.copies_of(served.id)
        live = self.fleet.live(served.id)
        if (
            exclude
            and not any(c.copy_id not in exclude for c in live)
            and not any(c.suspect for c in live if c.copy_id in exclude)
        ):
            exclude = frozenset()  # nothing else to try: the same copy once more beats failing
        # A suspect copy (its connection just broke) is not tried again: the request waits for its
        # health check to clear it, or for the replacement started when it is failed.
        cap = self._slot_cap(served, priority)
        if not lane.queue.has_waiter_at_or_before(priority):  # online passes waiting batch records
            copy = choose_copy(copies.values(), cap, exclude)
            if copy is not None:
                copy.in_flight += 1
                self._note_demand(lane)
                return copy
        wait_limit: float | None = None
        if not any(c.copy_id not in exclude for c in self.fleet.ready(served.id)):
            if not live:
                self.cold_starts.cold_start(served, policy)  # starts a copy, or raises
            if not policy.wait:
                raise ModelNotReadyError(
                    served.name, retry_after_seconds=self.settings.cold_start_retry_after_seconds
                )
            wait_limit = policy.max_wait_seconds
        if lane.queue.depth >= self.settings.max_queue_per_model:
            raise ServiceUnavailableError(
                f"Model '{served.name}' already has {lane.queue.depth} requests waiting for a copy "
                f"(serving.max_queue_per_model = {self.settings.max_queue_per_model}). Retry shortly, or raise "
                "max_copies / max_concurrency_per_copy so more requests are served at once.",
                retry_after_seconds=1.0,
            )
        waiter = Waiter(asyncio.get_running_loop().create_future(), priority, exclude)
        lane.queue.push(waiter)
        self._note_demand(lane)
        self.cold_starts.poke()
        window = asyncio.timeout(wait_limit)
        try:
            async with window:
                return await waiter.future
        except BaseException as exc:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(lane, future.result())  # served just as the request gave up
            else:
                lane.queue.abandon(waiter)
            if isinstance(exc, TimeoutError) and window.expired():
                raise ServiceUnavailableError(
                    f"No copy of '{served.name}' became ready within {wait_limit:g} s; it is still starting. "
                    "Retry shortly, or pre-start copies with `outcrop warm`.",
                    retry_after_seconds=self.settings.cold_start_retry_after_seconds,
                ) from None
            raise

    def _release(self, lane: Lane, copy: ModelCopy) -> None:
        copy.in_flight -= 1
        copy.last_used_at, copy.last_used_mono = time.time(), time.monotonic()
        self._dispatch(lane)

    def _dispatch(self, lane: Lane) -> None:
        if lane.queue.depth == 0:
            return
        copies = self.fleet.copies_of(lane.served.id)
        for waiter in lane.queue.pending():
            copy = choose_copy(copies.values(), self._slot_cap(lane.served, waiter.priority), waiter.exclude)
            if copy is None:
                if not waiter.exclude:
                    break
                continue
            copy.in_flight += 1
            lane.queue.serve(waiter, copy)

    def _slot_cap(self, served: ServedModel, priority: Priority) -> int:
        reserved = self.config.batch.online_reserved_slots_per_copy
        return slot_cap(priority, served.spec.max_concurrency_per_copy, reserved)

    async def _post_once(
        self, lane: Lane, copy: ModelCopy, path: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        assert copy.client is not None
        try:
            status, body = await copy.client.post_json(path, payload)
        except CopyTransportError as exc:
            self.fleet.suspect(copy, exc)
            raise _CopyUnusable(str(exc)) from None
        if status == 200:
            try:
                result = json.loads(body)
            except ValueError:
                result = None
            if not isinstance(result, dict):
                raise ModelFailedError(
                    f"The copy of '{lane.served.name}' answered with a body that is not a JSON object; "
                    "send the request again.",
                    model_id=lane.served.id,
                )
            if "model" in result:
                result["model"] = lane.served.name  # what the caller asked for, whatever the copy calls it
            return result
        raise self._response_error(lane, status, body)

    async def _open_stream(
        self, lane: Lane, copy: ModelCopy, path: str, payload: dict[str, Any]
    ) -> CopyResponse:
        assert copy.client is not None
        try:
            response = await copy.client.request("POST", path, payload)
            if response.status_code == 200:
                return response
            body = await response.aread()
        except CopyTransportError as exc:
            self.fleet.suspect(copy, exc)
            raise _CopyUnusable(str(exc)) from None
        raise self._response_error(lane, response.status_code, body)

    def _response_error(self, lane: Lane, status: int, body: bytes) -> Exception:
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
            return InvalidRequestError(message, param=param, code=code, model_id=lane.served.id)
        return ModelFailedError(
            f"The copy of '{lane.served.name}' failed while answering (HTTP {status}): {message}",
            original_status_code=status,
            model_id=lane.served.id,
        )

    def _unusable_error(self, lane: Lane, exc: _CopyUnusable) -> OutcropError:
        if exc.status_code is not None:
            return ServiceUnavailableError(
                f"The copies of '{lane.served.name}' are busy or shutting down (HTTP {exc.status_code}: "
                f"{exc.detail}); retry shortly.",
                retry_after_seconds=1.0,
            )
        return ModelFailedError(
            f"The copy of '{lane.served.name}' stopped answering ({exc.detail}) and the retry on another copy "
            "failed too; send the request again.",
            model_id=lane.served.id,
        )

    def _timeout_error(self, lane: Lane, limit: float) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"Model '{lane.served.name}' did not answer within the request's deadline of {limit:g} s. Lower "
            "max_tokens, send the request again, or allow a longer deadline.",
            model_id=lane.served.id,
        )


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
