"""The fleet of copies: starting them where they fit, health checks, restart backoff, stopping.

One task per copy runs its lifecycle: (make room) -> launch -> poll /health until Ready ->
health checks while Ready -> drain and stop (SIGTERM, SIGKILL after the drain bound), or
Failed. A copy that fails sets its model's restart backoff; if it was the model's last
live copy, the requests waiting for it get ServiceUnavailable with the reason (never a hang).
Replacements come from demand: the autoscaler and cold starts call :meth:`Fleet.start_copy`.

With a launcher whose copies every gateway of the store sees (``ray``), :meth:`Fleet.sync_loop`
adopts the copies this gateway did not start (it routes to every ready copy) and keeps two
leases in the store: this gateway's presence, and the autoscaler lease. Only the lease holder
scales and stops the shared copies (it owns them), adding the demand the other gateways
publish in the store to its own; a gateway that stops while another is alive leaves its
copies to it instead of stopping them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from outcrop.cluster.launchers import (
    STOPPED_EXIT_CODES,
    FoundCopy,
    LaunchedCopy,
    LaunchRequest,
    free_port,
    get_launcher,
)
from outcrop.config import OutcropConfig
from outcrop.envs import worker_id_hint
from outcrop.errors import NotFoundError, OutcropError, ServiceUnavailableError
from outcrop.registry.modelstore import MANIFEST_NAME
from outcrop.registry.service import Registry
from outcrop.serving.copies import CopyStatus, ModelCopy
from outcrop.serving.copyclient import CopyClient, CopyRefusedError, CopyTransportError
from outcrop.serving.memory import (
    EvictionCandidate,
    available_gpu_memory_bytes,
    available_memory_bytes,
    gib,
    gpu_index,
    plan_fit,
)
from outcrop.serving.pool import ModelPool
from outcrop.store.gateway_board import demand_board
from outcrop.store.imports import ImportedModel
from outcrop.store.leases import AUTOSCALER_LEASE, GATEWAY_PREFIX, Leases

log = logging.getLogger("outcrop.serving")

# Why 0.05 s: a tiny model is ready in ~1 s; polling /health faster than this costs the
# loading copy CPU, slower adds visibly to every cold start.
STARTUP_POLL_SECONDS = 0.05
# Why 20 polls (1 s): a copy whose connection just broke is usually exiting; waiting that
# long for its exit code fails it at once instead of after several health checks.
SUSPECT_EXIT_POLLS = 20
# How long past the drain bound a stop waits for a killed copy to be gone.
KILL_GRACE_SECONDS = 5.0
# Why 3: a gateway renews its presence every sync round; one that missed three in a row is
# likely dead, so a stopping gateway does not leave its copies to it.
SYNC_ROUNDS_ALIVE = 3


class Fleet:
    """Starts, watches and stops the copies of every model pool."""

    def __init__(
        self,
        config: OutcropConfig,
        registry: Registry,
        pools: dict[str, ModelPool],
        on_change: Callable[[ModelPool], None],
    ) -> None:
        self.config = config
        self.settings = config.serving
        self.registry = registry
        self.launcher = get_launcher(config)  # fails fast on an unknown launcher / bad template
        self.pools = pools  # shared with Serving: model id -> pool
        self.on_change = on_change  # a copy became ready, failed or ended: hand out slots, rescale
        self.lifecycles: dict[str, asyncio.Task[None]] = {}
        self._folders: dict[str, Path] = {}
        self._folder_locks: dict[str, asyncio.Lock] = {}
        self.gateway_id = f"{worker_id_hint()}:{secrets.token_hex(3)}"
        self.leases = Leases(registry.db)
        # A fleet of its own is always scaled here; a shared one only by the autoscaler lease holder.
        self.scaler = not self.launcher.shares_copies
        self._stopping = False
        self.demand_board = demand_board(registry.db)
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

    async def stop_all(self, reason: str) -> None:
        """Drain and stop every copy this gateway owns, bounded; kill what is left.

        On a shared fleet with another gateway alive, the copies are left to it (it adopts them).
        """
        self._stopping = True
        if self.launcher.shares_copies:
            try:
                others = await asyncio.to_thread(self._others_alive)
                if others:
                    log.info("leaving the copies to the other gateways", extra={"gateways": others})
                    for copy in self._all_copies():
                        if copy.launched is not None:
                            copy.launched.owned = False
                await asyncio.to_thread(self._release_leases)
            except Exception:  # the store is unreachable: stop what this gateway owns, leak nothing
                log.exception(
                    "could not reach the store while stopping; stopping the copies this gateway owns"
                )
        for pool in self.pools.values():
            for copy in list(pool.copies.values()):
                self.begin_stop(pool, copy, reason)
        await self.wait_for(list(self.lifecycles))
        for task in list(self.lifecycles.values()):
            task.cancel()
        for pool in self.pools.values():
            for copy in list(pool.copies.values()):
                if copy.launched is not None:
                    copy.launched.kill()
                if copy.client is not None:
                    await copy.client.aclose()
        pending = list(self.lifecycles.values())
        if pending:
            await asyncio.wait(pending, timeout=KILL_GRACE_SECONDS)
        self.launcher.close()

    # ------------------------------------------------------------------ a fleet shared by gateways

    def _all_copies(self) -> list[ModelCopy]:
        return [c for p in self.pools.values() for c in p.copies.values()]

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

    async def sync_loop(self, pool_for: Callable[[ImportedModel], ModelPool]) -> None:
        """On a shared fleet: renew the leases and adopt copies found running, every sync interval."""
        if not self.launcher.shares_copies:
            return
        while not self._stopping:
            try:
                await self.sync_once(pool_for)
            except Exception:  # the loop must survive a lost database connection or a Ray hiccup
                log.exception("fleet sync round failed")
            await asyncio.sleep(self.config.ray.sync_interval_seconds)

    async def sync_once(self, pool_for: Callable[[ImportedModel], ModelPool]) -> None:
        """Renew the leases; adopt the copies other gateways (or a crashed one) started; own them if scaling."""
        # Peak since the last round: a burst between two rounds still counts.
        horizon = time.monotonic() - self.config.ray.sync_interval_seconds
        demand = {}
        for p in self.pools.values():
            recent = max([p.demand_bucket, p.in_flight() + p.queue.depth], default=0)
            recent = max([recent, *(d for t, d in p.demand_samples if t >= horizon)])
            if recent:
                demand[p.model.id] = recent
        scaler, others = await asyncio.to_thread(self._renew_leases, demand)
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
        for copy in self._all_copies():
            if copy.launched is not None and copy.status is not CopyStatus.STARTING:
                copy.launched.owned = scaler  # the scaler owns every copy; the others only route
        if scaler:  # a model deleted through another gateway: its copies go too
            gone = await asyncio.to_thread(
                self._deleted_models, [m for m, p in self.pools.items() if p.copies]
            )
            for model_id in gone:
                pool = self.pools[model_id]
                for copy in list(pool.copies.values()):
                    self.begin_stop(pool, copy, "the model was deleted")
        known = {c.copy_id for c in self._all_copies()}
        for found in await asyncio.to_thread(self.launcher.discover, known):
            await self._adopt(found, pool_for)

    def _deleted_models(self, model_ids: list[str]) -> list[str]:
        gone = []
        for model_id in model_ids:
            try:
                self.registry.get_model(model_id)
            except NotFoundError:
                gone.append(model_id)
        return gone

    async def _adopt(self, found: FoundCopy, pool_for: Callable[[ImportedModel], ModelPool]) -> None:
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
                launched.owned = True
                launched.kill()
                launched.release()
            return
        launched.owned = self.scaler
        pool = pool_for(model)
        copy = ModelCopy(
            copy_id=found.copy_id,
            model_id=model.id,
            model_name=model.name,
            memory_estimate_bytes=model.memory_estimate_bytes,
            launched=launched,
            client=CopyClient(
                launched.host, launched.port, token=launched.token, request_model=launched.request_model
            ),
        )
        copy.started_at = found.started_at
        pool.copies[copy.copy_id] = copy
        task = asyncio.create_task(self._lifecycle(pool, copy, []), name=f"outcrop-{copy.copy_id}")
        self.lifecycles[copy.copy_id] = task
        task.add_done_callback(lambda _t: self.lifecycles.pop(copy.copy_id, None))
        log.info(
            "adopted a copy found running",
            extra={
                "model": model.name,
                "copy_id": copy.copy_id,
                "url": launched.url,
                "owned": launched.owned,
            },
        )

    async def wait_for(self, copy_ids: list[str]) -> None:
        """Wait (bounded by the drain timeout) until the lifecycles of these copies ended."""
        tasks = [self.lifecycles[i] for i in copy_ids if i in self.lifecycles]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.drain_timeout_seconds + 2 * KILL_GRACE_SECONDS)

    def forget_folder(self, model_id: str) -> None:
        self._folders.pop(model_id, None)

    def suspect(self, pool: ModelPool, copy: ModelCopy, exc: BaseException) -> None:
        """A request to ``copy`` failed at the transport level: fail it now if its process is gone."""
        launched = copy.launched
        code = launched.exit_code() if launched else None
        if code is not None:
            self.fail_copy(pool, copy, f"the process exited with code {code}{_tail(launched)}")
        elif isinstance(exc, CopyRefusedError):
            # The process may not be reaped yet, but nothing listens: retries must not come back here.
            self.fail_copy(pool, copy, f"it refused connections ({exc})")
        else:
            copy.suspect = True
            copy.wake.set()  # let its health check look at once

    def start_copy(self, pool: ModelPool, *, cold: bool) -> ModelCopy:
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
            self.begin_stop(victim_pool, victim, f"making room for a copy of '{pool.model.name}'")
        waits = [self.lifecycles[v.copy_id] for _, v in evict if v.copy_id in self.lifecycles]
        task = asyncio.create_task(self._lifecycle(pool, copy, waits), name=f"outcrop-{copy.copy_id}")
        self.lifecycles[copy.copy_id] = task
        task.add_done_callback(lambda _t: self.lifecycles.pop(copy.copy_id, None))
        log.info(
            "starting a copy",
            extra={"model": pool.model.name, "copy_id": copy.copy_id, "cold_start": cold},
        )
        return copy

    def _make_room(self, pool: ModelPool) -> list[tuple[ModelPool, ModelCopy]]:
        """The idle copies of other models to stop so a copy of ``pool`` fits; or ServiceUnavailableError."""
        needed = pool.model.memory_estimate_bytes
        all_copies = [(p, c) for p in self.pools.values() for c in p.copies.values()]
        free = math.inf
        # Starting copies have not allocated their memory yet: count their estimate as taken.
        starting = sum(c.memory_estimate_bytes for _, c in all_copies if c.status is CopyStatus.STARTING)
        on_gpu = self.launcher.name == "local" and gpu_index(self.settings.worker_device) is not None
        available: int | None = None
        if self.launcher.uses_local_memory:  # otherwise the launcher places copies where they fit
            available = (
                available_gpu_memory_bytes(self.settings.worker_device)
                if on_gpu
                else available_memory_bytes()
            )
        if available is not None:
            reserve = 0 if on_gpu else self.settings.memory_reserve_bytes
            free = available - reserve - starting
        if self.settings.memory_limit_bytes is not None:
            used = sum(c.memory_estimate_bytes for _, c in all_copies if not c.status.is_terminal())
            free = min(free, self.settings.memory_limit_bytes - used)
        if free == math.inf:
            return []
        candidates: dict[str, tuple[ModelPool, ModelCopy]] = {}
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
            if self.settings.memory_limit_bytes is not None:
                where = "the memory budget (serving.memory_limit_bytes)"
            elif on_gpu:
                where = f"free memory of {self.settings.worker_device} (nvidia-smi)"
            else:
                reserve_gib = gib(self.settings.memory_reserve_bytes)
                where = f"free memory (MemAvailable minus serving.memory_reserve_bytes {reserve_gib})"
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

    def begin_stop(self, pool: ModelPool, copy: ModelCopy, reason: str) -> None:
        if copy.transition(CopyStatus.DRAINING):
            log.info(
                "stopping a copy", extra={"model": pool.model.name, "copy_id": copy.copy_id, "reason": reason}
            )
            copy.wake.set()

    def fail_copy(self, pool: ModelPool, copy: ModelCopy, reason: str) -> None:
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
        # When a copy that had been serving dies, waiting requests outlast a short restart backoff:
        # the autoscaler starts the replacement when it ends and they are served by it. A copy that
        # never started (a likely persistent fault), or a long backoff, fails them now with the reason.
        keep_waiting = was_ready and backoff <= self.settings.cold_start_max_wait_seconds
        if not pool.live() and pool.queue.depth and not keep_waiting:
            pool.queue.fail_all(
                ServiceUnavailableError(
                    f"The copy of '{pool.model.name}' failed ({reason}); Outcrop starts another in "
                    f"{backoff:.1f} s. Retry then.",
                    retry_after_seconds=max(1.0, backoff),
                )
            )
        self.on_change(pool)

    async def _lifecycle(self, pool: ModelPool, copy: ModelCopy, evicting: list[asyncio.Task[None]]) -> None:
        """Launch -> wait for health -> Ready -> health checks -> drain -> Stopped (or Failed)."""
        try:
            if evicting:
                await asyncio.wait(evicting, timeout=self.settings.drain_timeout_seconds + KILL_GRACE_SECONDS)
            if copy.status is CopyStatus.STARTING and copy.launched is None:
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
            self.fail_copy(pool, copy, exc.message)
        except Exception as exc:  # a launcher or registry bug must not leave a copy half-started
            log.exception("copy lifecycle crashed", extra={"copy_id": copy.copy_id})
            self.fail_copy(pool, copy, f"{type(exc).__name__}: {exc}")
        try:
            await self._shut_down(pool, copy)
        finally:
            pool.copies.pop(copy.copy_id, None)
            if copy.client is not None:
                await copy.client.aclose()
            self.on_change(pool)

    async def _model_folder(self, pool: ModelPool) -> Path:
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

    async def _launch(self, pool: ModelPool, copy: ModelCopy) -> None:
        model_dir = await self._model_folder(pool)
        if copy.status is not CopyStatus.STARTING:
            return
        host = self.settings.copy_host
        files = await asyncio.to_thread(self.registry.jobs.model_files, pool.model.id)
        request = LaunchRequest(
            copy_id=copy.copy_id,
            model_id=pool.model.id,
            served_name=pool.model.name,
            model_dir=model_dir,
            host=host,
            port=free_port(host),
            log_path=self.config.resolved_data_dir / "logs" / "copies" / f"{copy.copy_id}.log",
            memory_estimate_bytes=pool.model.memory_estimate_bytes,
            model_files=tuple((f.path, f.sha256, f.size_bytes) for f in files),
            store_root=str(self.registry.store.root),
        )
        copy.launched = await asyncio.to_thread(self.launcher.launch, request)
        copy.client = CopyClient(
            copy.launched.host,
            copy.launched.port,
            token=copy.launched.token,
            request_model=copy.launched.request_model,
        )

    async def _wait_healthy(self, pool: ModelPool, copy: ModelCopy) -> None:
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
            await wait_event(copy.wake, STARTUP_POLL_SECONDS)

    async def _healthy(self, client: CopyClient, launched: LaunchedCopy) -> bool:
        try:
            async with asyncio.timeout(self.settings.health_timeout_seconds):
                status, _ = await client.get(launched.health_path)
        except (CopyTransportError, TimeoutError):
            return False
        return status == 200

    def _on_ready(self, pool: ModelPool, copy: ModelCopy) -> None:
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
        self.on_change(pool)

    async def _watch(self, pool: ModelPool, copy: ModelCopy) -> None:
        """Health checks while Ready; a dead or unresponsive copy is Failed (and replaced by demand)."""
        launched, client = copy.launched, copy.client
        assert launched is not None and client is not None
        misses = 0
        while copy.status is CopyStatus.READY:
            await wait_event(copy.wake, self.settings.health_interval_seconds)
            if copy.status is not CopyStatus.READY:
                return
            if copy.suspect:  # a request just lost its connection: the process may be exiting
                copy.suspect = False
                for _ in range(SUSPECT_EXIT_POLLS):
                    if launched.exit_code() is not None:
                        break
                    await asyncio.sleep(0.05)
            code = launched.exit_code()
            if code in STOPPED_EXIT_CODES and not launched.owned:
                self.begin_stop(pool, copy, "the gateway that scales it stopped it")
                return
            if code is not None:
                self.fail_copy(pool, copy, f"the process exited with code {code}{_tail(launched)}")
                return
            healthy = await self._healthy(client, launched)
            misses = 0 if healthy else misses + 1
            if misses >= self.settings.health_failures_before_failed:
                self.fail_copy(
                    pool, copy, f"{misses} health checks of {launched.health_path} failed in a row"
                )
                return

    async def _shut_down(self, pool: ModelPool, copy: ModelCopy) -> None:
        """Stop the copy's process: SIGTERM (it drains), SIGKILL after the drain bound.

        A copy this gateway does not own (another gateway scales it) is only forgotten here.
        """
        launched = copy.launched
        if launched is not None and launched.owned and launched.exit_code() is None:
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
        if launched is not None and launched.owned:
            launched.release()
        if not copy.status.is_terminal() and not copy.transition(CopyStatus.STOPPED):
            # Starting/Ready copies reach Stopped only through Draining.
            copy.transition(CopyStatus.DRAINING)
            copy.transition(CopyStatus.STOPPED)


def _tail(launched: LaunchedCopy | None) -> str:
    if launched is None:
        return ""
    tail = launched.log_tail()
    return f"; its last output: {tail}" if tail else f"; see {launched.log_path}"


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Sleep up to ``timeout`` seconds or until ``event`` is set; clears it."""
    if not event.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
    event.clear()
