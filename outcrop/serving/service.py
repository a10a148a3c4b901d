"""The serving facade: what the API surfaces and batch jobs call. It only wires the parts together.

Where things happen (each module says more):

- a request picks a copy in :mod:`outcrop.serving.router` (queues, slots, cold-start holds);
- scaling is decided in :mod:`outcrop.serving.autoscaler` (pure) and carried out by
  :mod:`outcrop.serving.controller` (the loop; cold starts; restart backoff);
- a copy is started, health-checked and stopped in :mod:`outcrop.serving.fleet`;
- gateways sharing one fleet coordinate in :mod:`outcrop.serving.gateways` (leases, demand
  board, adoption, ownership).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from outcrop.config import ModelServingSpec, OutcropConfig
from outcrop.errors import InvalidRequestError, ServiceUnavailableError
from outcrop.registry.service import Registry
from outcrop.serving.controller import Controller
from outcrop.serving.copies import CopyInfo, CopyStatus
from outcrop.serving.fleet import KILL_GRACE_SECONDS, Fleet
from outcrop.serving.gateways import Gateways
from outcrop.serving.router import ColdStartPolicy, Router
from outcrop.serving.routing import Priority
from outcrop.store.imports import ImportedModel
from outcrop.store.model_scaling import ModelScaling

__all__ = ["ColdStartPolicy", "CopyInfo", "CopyStatus", "Priority", "Serving"]


class Serving:
    """Routes requests to copies of imported models and keeps the right number of copies running."""

    def __init__(self, config: OutcropConfig, registry: Registry) -> None:
        self.config = config
        self.settings = config.serving
        self.fleet = Fleet(config, registry)
        self.gateways = Gateways(config, registry, self.fleet)
        self.controller = Controller(config, registry, self.fleet, self.gateways)
        self.router = Router(config, registry, self.fleet, self.controller)
        self.controller.attach(self.router)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Start the controller loop, warm ``min_copies``, and (a shared fleet) the gateway sync."""
        self.router.reopen()
        await self.controller.start()
        self._spawn(self.controller.warm_min_copies())
        self._spawn(self.controller.scaling_loop())
        self._spawn(self.gateways.sync_loop(self.router.recent_demand, self.controller.track))

    async def stop(self) -> None:
        """Drain and stop every copy (SIGTERM, then SIGKILL after the drain bound)."""
        await self.controller.stop()
        self.router.close(
            ServiceUnavailableError(
                "Outcrop is shutting down; retry the request in a moment or against another server.",
                retry_after_seconds=self.settings.cold_start_retry_after_seconds,
            )
        )
        await self.gateways.leave()
        await self.fleet.stop_all("Outcrop is shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=KILL_GRACE_SECONDS)

    # ------------------------------------------------------------------ requests (the router)

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
        return await self.router.post(
            model, path, body, cold_start=cold_start, priority=priority, deadline_seconds=deadline_seconds
        )

    def stream(
        self,
        model: str,
        path: str,
        body: dict[str, Any],
        *,
        cold_start: ColdStartPolicy,
        priority: Priority = Priority.ONLINE,
        deadline_seconds: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """A streaming call: yields each SSE ``data:`` JSON object of the copy (see :meth:`Router.stream`)."""
        return self.router.stream(
            model, path, body, cold_start=cold_start, priority=priority, deadline_seconds=deadline_seconds
        )

    async def resolve(self, name_or_arn: str) -> ImportedModel:
        """The imported model of a name or ARN, cached (NotFoundError if unknown)."""
        return await self.router.resolve(name_or_arn)

    def known_model_name(self, name_or_arn: str) -> str | None:
        """The name of a model this gateway resolved before (no query), else None: a bounded metrics label."""
        return self.router.known_model_name(name_or_arn)

    # ------------------------------------------------------------------ admin (the controller)

    async def warm(self, model: str, copies: int = 1) -> None:
        """Start copies of ``model`` until ``copies`` are live (not beyond max_copies); wait until ready."""
        served = self.controller.track(await self.router.resolve(model))
        await self.controller.warm(served, copies)

    async def pin(self, owner: str, model: str, copies: int) -> None:
        """Keep at least ``copies`` copies of ``model`` (name or ARN) running for ``owner`` until
        :meth:`unpin`: the idle autoscaler and memory eviction leave them be (``max_copies`` bounds them).
        Returns at once; the next autoscaler round starts what is missing (:meth:`warm` waits for them)."""
        self.controller.pin(self.controller.track(await self.router.resolve(model)), owner, copies)

    def unpin(self, owner: str) -> None:
        """Release ``owner``'s pin; the copies then scale down after the idle window, as any others."""
        self.controller.unpin(owner)

    async def stop_model(self, model_id: str) -> int:
        """Drain and stop every copy of a model (by id), e.g. before it is deleted; how many were stopped."""
        self.router.forget_model(model_id)
        return await self.controller.stop_model(model_id)

    def spec_for(self, model: ImportedModel) -> ModelServingSpec:
        """``serving.defaults`` with the model's ``serving.model_overrides`` entry applied."""
        return self.controller.spec_for(model)

    def check_scaling(self, model: ImportedModel, min_copies: int, max_copies: int) -> None:
        """Raise InvalidRequestError naming the fix unless 0 <= min_copies <= max_copies <= the cap."""
        cap = self.settings.scaling_max_copies
        if min_copies < 0:
            raise InvalidRequestError(
                f"'minCopies' is {min_copies}; it must be 0 or more (0 = scale to zero when idle).",
                param="minCopies",
            )
        if max_copies < 1:
            raise InvalidRequestError(
                f"'maxCopies' is {max_copies}; it must be at least 1 (set minCopies to 0 to scale to zero).",
                param="maxCopies",
            )
        if min_copies > max_copies:
            raise InvalidRequestError(
                f"'minCopies' ({min_copies}) is above 'maxCopies' ({max_copies}) for '{model.name}'; raise "
                f"maxCopies to at least {min_copies} or lower minCopies.",
                param="minCopies",
            )
        if max_copies > cap:
            raise InvalidRequestError(
                f"'maxCopies' is {max_copies}, above this server's cap of {cap} copies per model "
                "(serving.scaling_max_copies). Ask for at most "
                f"{cap}, or raise the cap with OUTCROP_SERVING__SCALING_MAX_COPIES (up to 64) and restart.",
                param="maxCopies",
            )

    def set_scaling(
        self, model: ImportedModel, min_copies: int, max_copies: int, updated_by: str | None = None
    ) -> ModelScaling:
        """Store the model's min/max copies (every gateway of the store follows them, across restarts) and
        apply them from the next autoscaler round: copies start up to min_copies, or stop down to max_copies.
        Call from a worker thread (it writes the database)."""
        self.check_scaling(model, min_copies, max_copies)
        scaling = self.controller.scaling_store.put(model.id, min_copies, max_copies, updated_by)
        return scaling

    def apply_scaling(self, model: ImportedModel, scaling: ModelScaling) -> None:
        """On the event loop, after :meth:`set_scaling`: this gateway acts on it now."""
        self.controller.set_scaling(model, scaling)

    def scaling(self, model: ImportedModel) -> dict[str, Any]:
        """The model detail's ``scaling`` object (min/max copies in force and the scale-to-zero clock)."""
        spec = self.controller.spec_for(model)
        stored = self.controller.scaling_of(model.id)
        return {
            "minCopies": spec.min_copies,
            "maxCopies": spec.max_copies,
            "source": "api" if stored is not None else "config",
            "maxCopiesCap": self.settings.scaling_max_copies,
            "liveCopies": len(self.fleet.live(model.id)),
            **self.controller.scale_to_zero(model),
        }

    def copies(self) -> list[CopyInfo]:
        """Every copy that is not stopped or failed, oldest first."""
        return self.fleet.infos()

    def stats(self) -> dict[str, Any]:
        """Per-model queue depth, copies by state, cold starts and start failures (for /metrics)."""
        models: dict[str, Any] = {}
        for state in self.controller.models():
            served = state.served
            by_state = {s.value: 0 for s in CopyStatus if not s.is_terminal()}
            for c in self.fleet.copies_of(served.id).values():
                by_state[c.status.value] = by_state.get(c.status.value, 0) + 1
            models[served.name] = {
                "model_id": served.id,
                "queue_depth": self.router.queued(served.id),
                "in_flight": self.router.in_flight(served.id),
                "copies": by_state,
                **self.controller.model_stats(state),
            }
        return {"models": models}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
