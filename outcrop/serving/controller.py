"""The controller: the loop that reads load, calls the pure scaling decisions and acts on them.

Scaling is *decided* in :mod:`outcrop.serving.autoscaler` (pure functions, tested with tables);
the controller is their one executor. It:

- runs the autoscaler round every ``serving.autoscaler_interval_seconds`` (sooner when poked):
  measures each model's load (the router's demand, plus the other gateways' on a shared
  fleet), calls :func:`~outcrop.serving.autoscaler.decide`, and starts or stops copies
  through the fleet;
- answers the router's cold starts (:func:`~outcrop.serving.autoscaler.cold_start_action`);
- listens to the fleet's copy events (:class:`~outcrop.serving.fleet.FleetEvents`): on a
  failure it sets the model's restart backoff
  (:func:`~outcrop.serving.autoscaler.restart_backoff_seconds`) and applies the fail-or-wait
  rule to the waiting requests (:func:`~outcrop.serving.autoscaler.fail_waiters_now`); on
  any event it lets the router hand out the freed or new slots;
- makes room before a start: picks idle copies of other models to stop when memory is
  short (:func:`~outcrop.serving.memory.plan_fit`);
- warms models up to ``min_copies``, and ``outcrop warm``;
- applies the min/max copies set through the API (``PUT /outcrop/models/{id}/scaling``, kept in
  :mod:`outcrop.store.model_scaling`): they win over the configuration's for those two fields, and
  are re-read every :data:`SCALING_REFRESH_SECONDS` so every gateway of a shared store follows them;
- keeps *pinned* copies: an owner (a SageMaker endpoint variant or inference component) asks
  for at least N copies of a model while it exists (:meth:`Controller.pin`); the model's pins
  add up and act as its ``min_copies`` (within ``max_copies``), so the idle autoscaler never
  stops them, and memory pressure never evicts them, until :meth:`Controller.unpin`.

It owns, per served model, the spec, the pins, the restart backoff and the cold-start and
failure counters. Copies are the fleet's, waiting requests and demand the router's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from outcrop.config import ModelServingSpec, OutcropConfig
from outcrop.errors import NotFoundError, ServiceUnavailableError
from outcrop.registry.service import Registry
from outcrop.serving.autoscaler import (
    ColdStart,
    CopyView,
    ModelLoad,
    ScaleAction,
    cold_start_action,
    decide,
    fail_waiters_now,
    restart_backoff_seconds,
)
from outcrop.serving.copies import CopyStatus, ModelCopy
from outcrop.serving.fleet import STARTUP_POLL_SECONDS, Fleet, wait_event
from outcrop.serving.gateways import Gateways
from outcrop.serving.memory import EvictionCandidate, gib, plan_fit
from outcrop.serving.model import ServedModel
from outcrop.serving.router import ColdStartPolicy, Router
from outcrop.store.imports import ImportedModel, ListFilter
from outcrop.store.model_scaling import ModelScaling, ModelScalingStore

log = logging.getLogger("outcrop.serving")

# Why 5 s: min/max set on another gateway of a shared store take effect within seconds, for one
# query of a table with a row per hand-scaled model.
SCALING_REFRESH_SECONDS = 5.0


@dataclass(eq=False)
class ModelState:
    """The controller's record of one served model: restart backoff and counters."""

    served: ServedModel
    cold_starts: int = 0
    cold_start_seconds_sum: float = 0.0
    cold_start_seconds_last: float | None = None
    start_failures: int = 0  # copies that never became ready
    copy_failures: int = 0  # ready copies that died or stopped answering
    consecutive_failures: int = 0
    next_start_at: float = 0.0  # monotonic; no copy starts before (restart backoff)
    last_failure: str | None = None


class Controller:
    """Keeps the right number of copies of every served model running (see the module docstring)."""

    def __init__(self, config: OutcropConfig, registry: Registry, fleet: Fleet, gateways: Gateways) -> None:
        self.config = config
        self.settings = config.serving
        self.registry = registry
        self.fleet = fleet
        self.gateways = gateways
        self.router: Router | None = None  # set by attach(); the controller tells it of new slots
        self._models: dict[str, ModelState] = {}  # model id -> state
        self._pins: dict[str, dict[str, int]] = {}  # model id -> owner -> copies it keeps running
        self.scaling_store = ModelScalingStore(registry.db)
        # model id -> min/max set through the API; read now so the first round already follows them
        self._scaling: dict[str, ModelScaling] = self.scaling_store.all()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.Task[None] | None = None
        fleet.report_to(self)

    def attach(self, router: Router) -> None:
        """Connect the router whose queues this controller serves (they refer to each other)."""
        self.router = router

    @property
    def _router(self) -> Router:
        assert self.router is not None, "Controller.attach(router) was not called"
        return self.router

    # ------------------------------------------------------------------ served models

    def spec_for(self, model: ImportedModel) -> ModelServingSpec:
        """``serving.defaults`` with the fields a ``serving.model_overrides`` entry (name or id) sets.

        A ``min_copies`` above ``max_copies`` raises ``max_copies`` to it (keeping copies warm wins).
        Min/max copies set through the API replace the configured ones (:meth:`set_scaling`).
        """
        spec = self.settings.defaults
        override = self.settings.model_overrides.get(model.name) or self.settings.model_overrides.get(
            model.id
        )
        if override is not None:
            merged = spec.model_dump()
            merged.update({k: getattr(override, k) for k in override.model_fields_set})
            spec = ModelServingSpec.model_validate(merged)
        return self._with_scaling(model.id, spec)

    def _with_scaling(self, model_id: str, spec: ModelServingSpec) -> ModelServingSpec:
        """``spec`` with the min/max copies set through the API for the model, if any."""
        scaling = self._scaling.get(model_id)
        if scaling is not None:
            spec = spec.model_copy(
                update={"min_copies": scaling.min_copies, "max_copies": scaling.max_copies}
            )
        if spec.min_copies > spec.max_copies:
            spec = spec.model_copy(update={"max_copies": spec.min_copies})
        return spec

    def scaling_of(self, model_id: str) -> ModelScaling | None:
        """The min/max copies set through the API for the model (None: the configuration's apply)."""
        return self._scaling.get(model_id)

    def set_scaling(self, model: ImportedModel, scaling: ModelScaling) -> None:
        """Min/max copies were stored for ``model``: apply them from the next round on (it starts or stops
        copies to fit), and serve the model from now on if it must be kept warm."""
        self._scaling[model.id] = scaling
        if scaling.min_copies > 0:
            self.track(model)
        self.poke()

    def load_scaling(self, rows: dict[str, ModelScaling]) -> None:
        """Replace the known min/max copies with the store's (read by :meth:`scaling_loop`)."""
        if rows != self._scaling:
            self._scaling = dict(rows)
            self.poke()

    async def scaling_loop(self) -> None:
        """Re-read the stored min/max copies every SCALING_REFRESH_SECONDS (another gateway may set them);
        models newly kept warm are tracked, so the next round starts their copies."""
        while True:
            await asyncio.sleep(SCALING_REFRESH_SECONDS)
            try:
                rows = await asyncio.to_thread(self.scaling_store.all)
            except Exception:  # a database hiccup: keep the last known values, try again next time
                log.warning("could not read the models' scaling settings", exc_info=True)
                continue
            self.load_scaling(rows)
            await self._track_kept_warm(rows)

    async def _track_kept_warm(self, rows: dict[str, ModelScaling]) -> None:
        for model_id, scaling in rows.items():
            if scaling.min_copies > 0 and model_id not in self._models:
                try:
                    self.track(await asyncio.to_thread(self.registry.get_model, model_id))
                except NotFoundError:
                    continue  # deleted meanwhile

    def scale_to_zero(self, model: ImportedModel) -> dict[str, float | None]:
        """For the model's detail: ``scaleToZeroSeconds`` (the idle window after which its last copy stops;
        None when it is kept warm), ``idleSeconds`` (how long its copies have had no request; None when it
        runs none) and ``scaleToZeroInSeconds`` (when the last copy goes if no request comes; None when it
        is kept warm or runs no copy)."""
        spec = self.spec_for(model)
        window = spec.idle_seconds_before_scale_down
        kept_warm = max(spec.min_copies, self.pinned_copies(model.id)) > 0
        live = self.fleet.live(model.id)
        idle_seconds: float | None = None
        if live:
            busy = any(c.in_flight for c in live) or (
                self.router is not None and self.router.queued(model.id)
            )
            last = max(max(c.last_used_mono or 0.0, c.ready_mono or 0.0, c.started_mono) for c in live)
            idle_seconds = 0.0 if busy else round(max(0.0, time.monotonic() - last), 3)
        left = None if kept_warm or idle_seconds is None else round(max(0.0, window - idle_seconds), 3)
        return {
            "scaleToZeroSeconds": None if kept_warm else window,
            "idleSeconds": idle_seconds,
            "scaleToZeroInSeconds": left,
        }

    def track(self, model: ImportedModel) -> ServedModel:
        """Serve (and scale) ``model`` from now on; its served record."""
        state = self._models.get(model.id)
        if state is None:
            state = self._models[model.id] = ModelState(ServedModel(model, self.spec_for(model)))
        return state.served

    def pin(self, served: ServedModel, owner: str, copies: int) -> None:
        """Keep at least ``copies`` copies of ``served`` running for ``owner`` until :meth:`unpin`
        (0 removes the owner's pin). Pins of one model add up; the next round starts what is missing."""
        self._state(served)
        for model_id in list(self._pins):  # an owner pins one model: moving it releases the old one
            if model_id != served.id:
                self._drop_pin(model_id, owner)
        if copies > 0:
            self._pins.setdefault(served.id, {})[owner] = copies
        else:
            self._drop_pin(served.id, owner)
        self.poke()

    def unpin(self, owner: str) -> None:
        """Release ``owner``'s pin; its copies scale down as any idle copies do."""
        for model_id in list(self._pins):
            self._drop_pin(model_id, owner)
        self.poke()

    def _drop_pin(self, model_id: str, owner: str) -> None:
        pins = self._pins.get(model_id)
        if pins is not None:
            pins.pop(owner, None)
            if not pins:
                del self._pins[model_id]

    def pinned_copies(self, model_id: str) -> int:
        """Copies of the model its pins keep running (before the ``max_copies`` bound)."""
        return sum(self._pins.get(model_id, {}).values())

    def scaling_spec(self, served: ServedModel) -> ModelServingSpec:
        """The spec the autoscaler uses: ``min_copies`` raised to the model's pins, within ``max_copies``."""
        spec = served.spec
        spec = self._with_scaling(served.id, spec)
        floor = min(max(spec.min_copies, self.pinned_copies(served.id)), spec.max_copies)
        return spec if floor == spec.min_copies else spec.model_copy(update={"min_copies": floor})

    def _state(self, served: ServedModel) -> ModelState:
        return self._models.setdefault(served.id, ModelState(served))

    def models(self) -> list[ModelState]:
        """Every served model's state, for stats."""
        return list(self._models.values())

    # ------------------------------------------------------------------ the loop

    async def start(self) -> None:
        """Start the autoscaler loop (then call :meth:`warm_min_copies`)."""
        self._wake = asyncio.Event()
        self._loop = asyncio.create_task(self._autoscale_loop(), name="outcrop-autoscaler")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    def poke(self) -> None:
        """Demand or copies changed: run a round soon."""
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
        router = self._router
        router.sample_demand(now)
        if not self.gateways.may_autoscale():
            return  # another gateway scales this shared fleet (it holds the autoscaler lease)
        for state in list(self._models.values()):
            served = state.served
            window = served.spec.idle_seconds_before_scale_down
            remote_now, remote_peak = self.gateways.remote_demand(served.id, window)  # other gateways'
            load = ModelLoad(
                model_id=served.id,
                in_flight=router.in_flight(served.id) + remote_now,
                queued=router.queued(served.id),
                peak_demand_in_window=max(router.peak_demand(served.id, now, window), remote_peak),
            )
            copies = self.fleet.copies_of(served.id)
            views = [
                CopyView(
                    copy_id=c.copy_id,
                    status=c.status,
                    in_flight=c.in_flight,
                    started_at=c.started_mono,
                    ready_at=c.ready_mono,
                    last_used_at=c.last_used_mono,
                )
                for c in copies.values()
            ]
            for decision in decide(load, views, self.scaling_spec(served), now):
                if decision.action is ScaleAction.START:
                    if now < state.next_start_at:
                        break  # restart backoff: the round after it ends starts the copy
                    try:
                        self._start(state, cold=not self.fleet.ready(served.id))
                    except ServiceUnavailableError as exc:
                        log.info("cannot scale up", extra={"model": served.name, "reason": exc.message})
                        if router.queued(served.id) and not self.fleet.live(served.id):
                            router.fail_waiting(served.id, exc)
                        break
                elif decision.copy_id is not None and decision.copy_id in copies:
                    self.fleet.begin_stop(copies[decision.copy_id], decision.reason)

    # ------------------------------------------------------------------ starting copies

    def cold_start(self, served: ServedModel, policy: ColdStartPolicy) -> None:
        """A request found no live copy of ``served``: start one, wait out a backoff, or raise."""
        state = self._state(served)
        action = cold_start_action(
            live_copies=len(self.fleet.live(served.id)),
            backoff_left_seconds=state.next_start_at - time.monotonic(),
            hold=policy.wait,
            max_wait_seconds=policy.max_wait_seconds,
        )
        if action is ColdStart.START:
            self._start(state, cold=True)
        elif action is ColdStart.REFUSE:
            raise self._backoff_error(state)
        # WAIT_OUT_BACKOFF: the round after the backoff starts the copy; the request waits for it.

    def _start(self, state: ModelState, *, cold: bool) -> ModelCopy:
        """Start a copy of the model, or raise ServiceUnavailableError (restart backoff, no room)."""
        if time.monotonic() < state.next_start_at:
            raise self._backoff_error(state)
        evict = self._make_room(state.served)
        for victim in evict:
            self.fleet.begin_stop(victim, f"making room for a copy of '{state.served.name}'")
        return self.fleet.start(state.served, cold=cold, after=evict)

    def _backoff_error(self, state: ModelState) -> ServiceUnavailableError:
        wait = state.next_start_at - time.monotonic()
        return ServiceUnavailableError(
            f"Copies of '{state.served.name}' failed {state.consecutive_failures} time(s) in a row (last: "
            f"{state.last_failure}); the next start is allowed in {wait:.1f} s. Fix the cause, or retry later.",
            retry_after_seconds=max(1.0, wait),
        )

    def _make_room(self, served: ServedModel) -> list[ModelCopy]:
        """The idle copies of other models to stop so a copy of ``served`` fits; or ServiceUnavailableError."""
        needed = served.model.memory_estimate_bytes
        room = self.fleet.room()
        if room.free_bytes == float("inf"):
            return []
        candidates: dict[str, ModelCopy] = {}
        for state in self._models.values():
            other = state.served
            if other.id == served.id or self._router.queued(other.id):
                continue
            if len(self.fleet.live(other.id)) <= self.scaling_spec(other).min_copies:
                continue
            for c in self.fleet.ready(other.id):
                if c.in_flight == 0:
                    candidates[c.copy_id] = c
        plan = plan_fit(
            needed,
            int(room.free_bytes),
            [
                EvictionCandidate(c.copy_id, c.model_name, c.memory_estimate_bytes, c.last_used_mono or 0.0)
                for c in candidates.values()
            ],
        )
        if not plan.fits:
            raise ServiceUnavailableError(
                f"A copy of '{served.name}' needs about {gib(needed)} but {room.where} leaves "
                f"{gib(max(0, int(room.free_bytes)))}, and stopping idle copies of other models would free only "
                f"{gib(plan.reclaimable_bytes)}. Retry when other models are idle, stop copies (`outcrop copies`), "
                "or add memory.",
                retry_after_seconds=max(self.settings.cold_start_retry_after_seconds, 5.0),
            )
        if plan.evict:
            log.info(
                "stopping idle copies to make room",
                extra={"model": served.name, "copies": list(plan.evict)},
            )
        return [candidates[i] for i in plan.evict]

    # ------------------------------------------------------------------ copy events (FleetEvents)

    def copy_ready(self, copy: ModelCopy, seconds: float) -> None:
        state = self._models.get(copy.model_id)
        if state is not None:
            state.consecutive_failures = 0
            state.next_start_at = 0.0
            if copy.cold_start:
                state.cold_starts += 1
                state.cold_start_seconds_sum += seconds
                state.cold_start_seconds_last = seconds
        self._slots_changed(copy.model_id)

    def copy_failed(self, copy: ModelCopy, reason: str, *, was_ready: bool) -> None:
        state = self._models.get(copy.model_id)
        if state is not None:
            if was_ready:
                state.copy_failures += 1
            else:
                state.start_failures += 1
            state.consecutive_failures += 1
            backoff = restart_backoff_seconds(
                state.consecutive_failures,
                self.settings.restart_backoff_initial_seconds,
                self.settings.restart_backoff_max_seconds,
            )
            state.next_start_at = time.monotonic() + backoff
            state.last_failure = f"copy {copy.copy_id}: {reason}"
            log.warning(
                "copy failed",
                extra={
                    "model": copy.model_name,
                    "copy_id": copy.copy_id,
                    "reason": reason,
                    "backoff_s": backoff,
                },
            )
            if fail_waiters_now(
                was_ready=was_ready,
                backoff_seconds=backoff,
                max_wait_seconds=self.settings.cold_start_max_wait_seconds,
                live_copies=len(self.fleet.live(copy.model_id)),
                queued=self._router.queued(copy.model_id),
            ):
                self._router.fail_waiting(
                    copy.model_id,
                    ServiceUnavailableError(
                        f"The copy of '{copy.model_name}' failed ({reason}); Outcrop starts another in "
                        f"{backoff:.1f} s. Retry then.",
                        retry_after_seconds=max(1.0, backoff),
                    ),
                )
        self._slots_changed(copy.model_id)

    def copy_ended(self, copy: ModelCopy) -> None:
        self._slots_changed(copy.model_id)

    def _slots_changed(self, model_id: str) -> None:
        self._router.dispatch(model_id)
        self.poke()

    # ------------------------------------------------------------------ admin

    async def warm(self, served: ServedModel, copies: int = 1) -> None:
        """Start copies of ``served`` until ``copies`` are live (not beyond max_copies); wait until ready."""
        state = self._state(served)
        target = max(1, min(copies, self._with_scaling(served.id, served.spec).max_copies))
        while len(self.fleet.live(served.id)) < target:
            self._start(state, cold=False)
        limit = self.settings.copy_start_timeout_seconds
        deadline = time.monotonic() + limit
        while any(c.status is CopyStatus.STARTING for c in self.fleet.copies_of(served.id).values()):
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"Copies of '{served.name}' were not ready within {limit:g} s "
                    "(serving.copy_start_timeout_seconds).",
                    retry_after_seconds=self.settings.cold_start_retry_after_seconds,
                )
            await asyncio.sleep(STARTUP_POLL_SECONDS)
        if not self.fleet.ready(served.id):
            raise ServiceUnavailableError(
                f"No copy of '{served.name}' could be started: {state.last_failure or 'it was stopped'}.",
                retry_after_seconds=max(1.0, state.next_start_at - time.monotonic()),
            )

    async def stop_model(self, model_id: str) -> int:
        """Drain and stop every copy of a model, then forget it; how many copies were stopped."""
        stopping = list(self.fleet.copies_of(model_id).values())
        for copy in stopping:
            self.fleet.begin_stop(copy, "the model is being removed")
        await self.fleet.wait_for([c.copy_id for c in stopping])
        if not self.fleet.copies_of(model_id):
            self._models.pop(model_id, None)
        self._pins.pop(model_id, None)
        self.fleet.forget_model(model_id)
        return len(stopping)

    async def warm_min_copies(self) -> None:
        """At start: track every model with ``min_copies`` > 0; the next round brings it up to them."""
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
        rows = await asyncio.to_thread(self.scaling_store.all)  # min/max set through the API
        self.load_scaling(rows)
        await self._track_kept_warm(rows)
        for name in dict.fromkeys(names):
            try:
                model = await self._router.resolve(name)
            except NotFoundError:
                log.warning(
                    "serving.model_overrides names a model that does not exist", extra={"model": name}
                )
                continue
            self.track(model)
        self.poke()

    def model_stats(self, state: ModelState) -> dict[str, Any]:
        return {
            "cold_starts": state.cold_starts,
            "cold_start_seconds_sum": state.cold_start_seconds_sum,
            "cold_start_seconds_last": state.cold_start_seconds_last,
            "start_failures": state.start_failures,
            "copy_failures": state.copy_failures,
            "last_failure": state.last_failure,
        }
