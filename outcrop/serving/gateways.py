"""Gateway coordination: several gateways sharing one fleet of copies (leases, demand board, adoption, ownership).

With a launcher whose copies every gateway of the store sees (``ray``), each gateway routes to
every ready copy, but only one scales them. Every sync interval, :meth:`Gateways.sync_once`:

- renews two leases in the store: this gateway's presence, and the autoscaler lease; the
  lease holder is *the scaler*;
- publishes this gateway's demand on the demand board, and (the scaler) reads the others',
  which the controller adds to its own (:meth:`Gateways.remote_demand`);
- adopts the copies it finds running that it did not start (another gateway's, or a crashed
  one's), so the router can send them requests;
- sets who owns each copy: the scaler owns every copy (it stops them), the others only
  route to them. This module is the only writer of a copy's ``launched.owned``.

A gateway that stops while another is alive leaves its copies to it instead of stopping
them (:meth:`Gateways.leave`). With a launcher of its own (``local``, ``command``) a gateway
is always its own scaler and none of this runs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Callable

from outcrop.cluster.launchers import FoundCopy, LaunchedCopy
from outcrop.config import OutcropConfig
from outcrop.envs import worker_id_hint
from outcrop.errors import NotFoundError
from outcrop.registry.service import Registry
from outcrop.serving.copies import CopyStatus
from outcrop.serving.fleet import Fleet
from outcrop.serving.model import ServedModel
from outcrop.store.gateway_board import demand_board
from outcrop.store.imports import ImportedModel
from outcrop.store.leases import AUTOSCALER_LEASE, GATEWAY_PREFIX, Leases

log = logging.getLogger("outcrop.serving")

# Why 3: a gateway renews its presence every sync round; one that missed three in a row is
# likely dead, so a stopping gateway does not leave its copies to it.
SYNC_ROUNDS_ALIVE = 3

DemandReader = Callable[[float], dict[str, int]]  # horizon (monotonic) -> model id -> peak demand since
ModelTracker = Callable[[ImportedModel], ServedModel]  # the controller's: serve (and scale) this model


def set_owned(launched: LaunchedCopy, owned: bool) -> None:
    """The one place a copy's ownership changes: True, this gateway stops it; False, it only routes to it."""
    launched.owned = owned


class Gateways:
    """This gateway's place among the gateways of a shared fleet; owns the leases and the others' demand."""

    def __init__(self, config: OutcropConfig, registry: Registry, fleet: Fleet) -> None:
        self.config = config
        self.registry = registry
        self.fleet = fleet
        self.shared = fleet.launcher.shares_copies
        self.gateway_id = f"{worker_id_hint()}:{secrets.token_hex(3)}"
        self.leases = Leases(registry.db)
        self.demand_board = demand_board(registry.db)
        # A fleet of its own is always scaled here; a shared one only by the autoscaler lease holder.
        self.scaler = not self.shared
        self._stopping = False
        # model id -> (monotonic time, demand of the other gateways) samples, newest last
        self._remote_demand: dict[str, collections.deque[tuple[float, int]]] = {}

    def may_autoscale(self) -> bool:
        """Whether this gateway starts and stops copies by the autoscaler's decisions now."""
        return self.scaler and not self._stopping

    def remote_demand(self, model_id: str, window_seconds: float) -> tuple[int, int]:
        """(now, peak over the last ``window_seconds``) of the other gateways' demand for a model."""
        samples = self._remote_demand.get(model_id)
        if not samples:
            return 0, 0
        horizon = time.monotonic() - window_seconds
        while len(samples) > 1 and samples[0][0] < horizon:
            samples.popleft()
        return samples[-1][1], max(d for _, d in samples)

    async def leave(self) -> None:
        """Stop scaling; on a shared fleet with another gateway alive, leave the copies to it; drop the leases."""
        self._stopping = True
        if not self.shared:
            return
        try:
            others = await asyncio.to_thread(self._others_alive)
            if others:
                log.info("leaving the copies to the other gateways", extra={"gateways": others})
                for copy in self.fleet.all_copies():
                    if copy.launched is not None:
                        set_owned(copy.launched, False)
            await asyncio.to_thread(self._release_leases)
        except Exception:  # the store is unreachable: stop what this gateway owns, leak nothing
            log.exception("could not reach the store while stopping; stopping the copies this gateway owns")

    async def sync_loop(self, demand: DemandReader, track: ModelTracker) -> None:
        """On a shared fleet: renew the leases and adopt copies found running, every sync interval."""
        if not self.shared:
            return
        while not self._stopping:
            try:
                await self.sync_once(demand, track)
            except Exception:  # the loop must survive a lost database connection or a Ray hiccup
                log.exception("fleet sync round failed")
            await asyncio.sleep(self.config.ray.sync_interval_seconds)

    async def sync_once(self, demand: DemandReader, track: ModelTracker) -> None:
        """Renew the leases; adopt the copies other gateways (or a crashed one) started; own them if scaling."""
        # Peak since the last round: a burst between two rounds still counts.
        mine = demand(time.monotonic() - self.config.ray.sync_interval_seconds)
        scaler, others = await asyncio.to_thread(self._renew_leases, mine)
        if self._stopping:
            return
        now = time.monotonic()
        for model_id in set(others) | set(self._remote_demand):
            self._remote_demand.setdefault(model_id, collections.deque()).append(
                (now, others.get(model_id, 0))
            )
        if scaler != self.scaler:
            log.info(
                "autoscaler lease " + ("taken" if scaler else "lost"), extra={"gateway": self.gateway_id}
            )
            self.scaler = scaler
        for copy in self.fleet.all_copies():
            if copy.launched is not None and copy.status is not CopyStatus.STARTING:
                set_owned(copy.launched, scaler)  # the scaler owns every copy; the others only route
        if scaler:  # a model deleted through another gateway: its copies go too
            gone = await asyncio.to_thread(self._deleted_models, self.fleet.model_ids())
            for model_id in gone:
                for copy in list(self.fleet.copies_of(model_id).values()):
                    self.fleet.begin_stop(copy, "the model was deleted")
        known = {c.copy_id for c in self.fleet.all_copies()}
        for found in await asyncio.to_thread(self.fleet.launcher.discover, known):
            await self._adopt(found, track)

    # ------------------------------------------------------------------ internals

    def _others_alive(self) -> list[str]:
        """Other gateways that renewed their presence in the last few sync rounds (so are alive now)."""
        ray = self.config.ray
        fresh = time.time() + ray.scaler_lease_seconds - SYNC_ROUNDS_ALIVE * ray.sync_interval_seconds
        return [
            g for g in self.leases.live_holders(GATEWAY_PREFIX, expiring_after=fresh) if g != self.gateway_id
        ]

    def _release_leases(self) -> None:
        self.demand_board.clear(self.gateway_id)
        self.leases.release(AUTOSCALER_LEASE, self.gateway_id)
        self.leases.release(GATEWAY_PREFIX + self.gateway_id, self.gateway_id)

    def _renew_leases(self, demand: dict[str, int]) -> tuple[bool, dict[str, int]]:
        """Renew this gateway's leases and publish its demand; (holds the autoscaler lease, others' demand)."""
        seconds = self.config.ray.scaler_lease_seconds
        self.leases.acquire(GATEWAY_PREFIX + self.gateway_id, self.gateway_id, seconds)
        scaler = self.leases.acquire(AUTOSCALER_LEASE, self.gateway_id, seconds)
        self.demand_board.publish(self.gateway_id, demand)
        others = self.demand_board.others(self.gateway_id, seconds) if scaler else {}
        return scaler, others

    def _deleted_models(self, model_ids: list[str]) -> list[str]:
        gone = []
        for model_id in model_ids:
            try:
                self.registry.get_model(model_id)
            except NotFoundError:
                gone.append(model_id)
        return gone

    async def _adopt(self, found: FoundCopy, track: ModelTracker) -> None:
        """Route to a found copy of a known model; the scaler removes one of an unknown model or that exited."""
        try:
            model: ImportedModel | None = await asyncio.to_thread(self.registry.get_model, found.model_id)
        except NotFoundError:
            model = None
        launched = found.launched
        if model is None or not found.running:
            if self.scaler:
                why = (
                    "its process exited" if model is not None else f"model {found.model_id} no longer exists"
                )
                log.info("removing a copy found running", extra={"copy_id": found.copy_id, "reason": why})
                set_owned(launched, True)
                launched.kill()
                launched.release()
            return
        set_owned(launched, self.scaler)
        copy = self.fleet.adopt(found, track(model))
        log.info(
            "adopted a copy found running",
            extra={
                "model": model.name,
                "copy_id": copy.copy_id,
                "url": launched.url,
                "owned": launched.owned,
            },
        )
