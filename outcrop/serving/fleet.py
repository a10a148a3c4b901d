"""Where a copy is started: the fleet launches copies, health-checks them and stops them. Nothing else.

One task per copy runs its lifecycle: (wait for the copies it replaces to stop) -> launch ->
poll /health until Ready -> health checks while Ready -> drain and stop (SIGTERM, SIGKILL
after the drain bound), or Failed.

The fleet owns the copy records (:class:`~outcrop.serving.copies.ModelCopy`) and their
lifecycle status; the router owns each record's ``in_flight`` / ``last_used`` counters. The
fleet decides nothing: *whether* a copy starts or stops, and what a failure means for the
requests waiting, is the controller's (:mod:`outcrop.serving.controller`), which the fleet
tells of every copy that became ready, failed or ended through :class:`FleetEvents`. Which
gateway owns a copy shared by several is :mod:`outcrop.serving.gateways`'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from outcrop.cluster.launchers import (
    STOPPED_EXIT_CODES,
    FoundCopy,
    LaunchedCopy,
    LaunchRequest,
    free_port,
    get_launcher,
)
from outcrop.config import OutcropConfig
from outcrop.engine.loader import MANIFEST_NAME
from outcrop.errors import NotFoundError, OutcropError, ServiceUnavailableError
from outcrop.registry.service import Registry
from outcrop.serving.copies import CopyInfo, CopyStatus, ModelCopy
from outcrop.serving.copyclient import CopyClient, CopyRefusedError, CopyTransportError
from outcrop.serving.memory import available_gpu_memory_bytes, available_memory_bytes, gib, gpu_index
from outcrop.serving.model import ServedModel

log = logging.getLogger("outcrop.serving")

# Why 0.05 s: a tiny model is ready in ~1 s; polling /health faster than this costs the
# loading copy CPU, slower adds visibly to every cold start.
STARTUP_POLL_SECONDS = 0.05
# Why 20 polls (1 s): a copy whose connection just broke is usually exiting; waiting that
# long for its exit code fails it at once instead of after several health checks.
SUSPECT_EXIT_POLLS = 20
# How long past the drain bound a stop waits for a killed copy to be gone.
KILL_GRACE_SECONDS = 5.0


class FleetEvents(Protocol):
    """What the fleet reports (to the controller): one call per lifecycle event of a copy."""

    def copy_ready(self, copy: ModelCopy, seconds: float) -> None:
        """``copy`` answered /health ``seconds`` after it was started."""

    def copy_failed(self, copy: ModelCopy, reason: str, *, was_ready: bool) -> None:
        """``copy`` failed (it is Failed now); ``was_ready``: it had been serving."""

    def copy_ended(self, copy: ModelCopy) -> None:
        """``copy``'s lifecycle ended: it is stopped or failed and no longer listed."""


@dataclass(frozen=True)
class Room:
    """The memory a new copy may use here, as the fleet measures it."""

    free_bytes: float  # math.inf: not limited here (the launcher places copies where they fit)
    where: str  # what limits it, for error messages


class Fleet:
    """Starts, watches and stops the copies of every model; reports their events to one listener."""

    def __init__(self, config: OutcropConfig, registry: Registry) -> None:
        self.config = config
        self.settings = config.serving
        self.registry = registry
        self.launcher = get_launcher(config)  # fails fast on an unknown launcher / bad template
        self._copies: dict[str, dict[str, ModelCopy]] = {}  # model id -> copy id -> record
        self._events: FleetEvents | None = None
        self.lifecycles: dict[str, asyncio.Task[None]] = {}
        self._folders: dict[str, Path] = {}
        self._folder_locks: dict[str, asyncio.Lock] = {}

    def report_to(self, events: FleetEvents) -> None:
        """Set the one listener of copy events (the controller)."""
        self._events = events

    # ------------------------------------------------------------------ what runs

    def copies_of(self, model_id: str) -> Mapping[str, ModelCopy]:
        """The copies of a model that are not gone yet (read-only view), by copy id."""
        return self._copies.get(model_id, {})

    def all_copies(self) -> list[ModelCopy]:
        return [c for copies in self._copies.values() for c in copies.values()]

    def live(self, model_id: str) -> list[ModelCopy]:
        return [c for c in self.copies_of(model_id).values() if c.status.is_live()]

    def ready(self, model_id: str) -> list[ModelCopy]:
        return [c for c in self.copies_of(model_id).values() if c.status is CopyStatus.READY]

    def model_ids(self) -> list[str]:
        """Models with at least one copy listed."""
        return [m for m, copies in self._copies.items() if copies]

    def infos(self) -> list[CopyInfo]:
        """Every copy that is not stopped or failed, oldest first."""
        return sorted((c.info() for c in self.all_copies()), key=lambda c: c.started_at)

    def room(self) -> Room:
        """The memory free for one more copy: measured here, minus the reserve and what starting copies will take."""
        copies = self.all_copies()
        free = math.inf
        where = ""
        # Starting copies have not allocated their memory yet: count their estimate as taken.
        starting = sum(c.memory_estimate_bytes for c in copies if c.status is CopyStatus.STARTING)
        on_gpu = self.launcher.name == "local" and gpu_index(self.settings.worker_device) is not None
        if self.launcher.uses_local_memory:  # otherwise the launcher places copies where they fit
            if on_gpu:
                available = available_gpu_memory_bytes(self.settings.worker_device)
                where = f"free memory of {self.settings.worker_device} (nvidia-smi)"
            else:
                available = available_memory_bytes()
                where = (
                    "free memory (MemAvailable minus serving.memory_reserve_bytes "
                    f"{gib(self.settings.memory_reserve_bytes)})"
                )
            if available is not None:
                reserve = 0 if on_gpu else self.settings.memory_reserve_bytes
                free = available - reserve - starting
        if self.settings.memory_limit_bytes is not None:
            used = sum(c.memory_estimate_bytes for c in copies if not c.status.is_terminal())
            free = min(free, self.settings.memory_limit_bytes - used)
            where = "the memory budget (serving.memory_limit_bytes)"
        return Room(free, where)

    # ------------------------------------------------------------------ starting and stopping

    def start(self, served: ServedModel, *, cold: bool, after: Sequence[ModelCopy] = ()) -> ModelCopy:
        """Create a Starting copy of ``served`` and its lifecycle task; it launches once ``after`` have stopped."""
        copy = ModelCopy(
            copy_id=f"copy-{secrets.token_hex(4)}",
            model_id=served.id,
            model_name=served.name,
            memory_estimate_bytes=served.model.memory_estimate_bytes,
            cold_start=cold,
        )
        self._copies.setdefault(served.id, {})[copy.copy_id] = copy
        waits = [self.lifecycles[v.copy_id] for v in after if v.copy_id in self.lifecycles]
        self._run_lifecycle(copy, waits)
        log.info(
            "starting a copy",
            extra={"model": served.name, "copy_id": copy.copy_id, "cold_start": cold},
        )
        return copy

    def adopt(self, found: FoundCopy, served: ServedModel) -> ModelCopy:
        """Watch and route to a copy found running that this gateway did not start."""
        launched = found.launched
        copy = ModelCopy(
            copy_id=found.copy_id,
            model_id=served.id,
            model_name=served.name,
            memory_estimate_bytes=served.model.memory_estimate_bytes,
            launched=launched,
            client=CopyClient(
                launched.host, launched.port, token=launched.token, request_model=launched.request_model
            ),
        )
        copy.started_at = found.started_at
        self._copies.setdefault(served.id, {})[copy.copy_id] = copy
        self._run_lifecycle(copy, [])
        return copy

    def _run_lifecycle(self, copy: ModelCopy, waits: list[asyncio.Task[None]]) -> None:
        task = asyncio.create_task(self._lifecycle(copy, waits), name=f"outcrop-{copy.copy_id}")
        self.lifecycles[copy.copy_id] = task
        task.add_done_callback(lambda _t: self.lifecycles.pop(copy.copy_id, None))

    def begin_stop(self, copy: ModelCopy, reason: str) -> None:
        """Drain and stop a copy (no new requests; it finishes the ones in flight)."""
        if copy.transition(CopyStatus.DRAINING):
            log.info(
                "stopping a copy", extra={"model": copy.model_name, "copy_id": copy.copy_id, "reason": reason}
            )
            copy.wake.set()

    def fail(self, copy: ModelCopy, reason: str) -> None:
        """Declare a copy Failed (its lifecycle kills it) and report it."""
        if copy.status.is_terminal():
            return
        was_ready = copy.ready_at is not None
        copy.transition(CopyStatus.FAILED)
        copy.failure = reason
        copy.wake.set()
        if self._events is not None:
            self._events.copy_failed(copy, reason, was_ready=was_ready)

    def suspect(self, copy: ModelCopy, exc: BaseException) -> None:
        """A request to ``copy`` failed at the transport level: fail it now if its process is gone."""
        launched = copy.launched
        code = launched.exit_code() if launched else None
        if code is not None:
            self.fail(copy, f"the process exited with code {code}{_tail(launched)}")
        elif isinstance(exc, CopyRefusedError):
            # The process may not be reaped yet, but nothing listens: retries must not come back here.
            self.fail(copy, f"it refused connections ({exc})")
        else:
            copy.suspect = True
            copy.wake.set()  # let its health check look at once

    async def wait_for(self, copy_ids: list[str]) -> None:
        """Wait (bounded by the drain timeout) until the lifecycles of these copies ended."""
        tasks = [self.lifecycles[i] for i in copy_ids if i in self.lifecycles]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.drain_timeout_seconds + 2 * KILL_GRACE_SECONDS)

    def forget_model(self, model_id: str) -> None:
        """Drop what the fleet kept for a model without copies (its materialised folder)."""
        self._folders.pop(model_id, None)
        if not self._copies.get(model_id):
            self._copies.pop(model_id, None)

    async def stop_all(self, reason: str) -> None:
        """Drain and stop every copy, bounded; kill what is left (copies not owned here are only forgotten)."""
        for copy in self.all_copies():
            self.begin_stop(copy, reason)
        await self.wait_for(list(self.lifecycles))
        for task in list(self.lifecycles.values()):
            task.cancel()
        for copy in self.all_copies():
            if copy.launched is not None:
                copy.launched.kill()
            if copy.client is not None:
                await copy.client.aclose()
        pending = list(self.lifecycles.values())
        if pending:
            await asyncio.wait(pending, timeout=KILL_GRACE_SECONDS)
        self.launcher.close()

    # ------------------------------------------------------------------ one copy's lifecycle

    async def _lifecycle(self, copy: ModelCopy, evicting: list[asyncio.Task[None]]) -> None:
        """Launch -> wait for health -> Ready -> health checks -> drain -> Stopped (or Failed)."""
        try:
            if evicting:
                await asyncio.wait(evicting, timeout=self.settings.drain_timeout_seconds + KILL_GRACE_SECONDS)
            if copy.status is CopyStatus.STARTING and copy.launched is None:
                await self._launch(copy)
            if copy.status is CopyStatus.STARTING:
                await self._wait_healthy(copy)
            if copy.status is CopyStatus.READY:
                await self._watch(copy)
        except asyncio.CancelledError:
            if copy.launched is not None:
                copy.launched.kill()
            raise
        except OutcropError as exc:
            self.fail(copy, exc.message)
        except Exception as exc:  # a launcher or registry bug must not leave a copy half-started
            log.exception("copy lifecycle crashed", extra={"copy_id": copy.copy_id})
            self.fail(copy, f"{type(exc).__name__}: {exc}")
        try:
            await self._shut_down(copy)
        finally:
            self._copies.get(copy.model_id, {}).pop(copy.copy_id, None)
            if copy.client is not None:
                await copy.client.aclose()
            if self._events is not None:
                self._events.copy_ended(copy)

    async def _model_folder(self, copy: ModelCopy) -> Path:
        """The model's materialised folder, made once per model and shared by its copies.

        ``Registry.model_folder`` rebuilds the folder in place, which must not happen twice at
        once nor under a copy that is still loading from it.
        """
        model_id = copy.model_id
        async with self._folder_locks.setdefault(model_id, asyncio.Lock()):
            folder = self._folders.get(model_id)
            if folder is None or not (folder / MANIFEST_NAME).is_file():
                try:
                    folder = await asyncio.to_thread(self.registry.model_folder, model_id)
                except NotFoundError:
                    raise ServiceUnavailableError(
                        f"Model '{copy.model_name}' was deleted while its copy was starting.",
                        retry_after_seconds=1.0,
                    ) from None
                self._folders[model_id] = folder
            return folder

    async def _launch(self, copy: ModelCopy) -> None:
        model_dir = await self._model_folder(copy)
        if copy.status is not CopyStatus.STARTING:
            return
        host = self.settings.copy_host
        files = await asyncio.to_thread(self.registry.jobs.model_files, copy.model_id)
        try:
            record = await asyncio.to_thread(self.registry.jobs.get_model, copy.model_id)
        except NotFoundError:
            raise ServiceUnavailableError(
                f"Model '{copy.model_name}' was deleted while its copy was starting.", retry_after_seconds=1.0
            ) from None
        request = LaunchRequest(
            copy_id=copy.copy_id,
            model_id=copy.model_id,
            served_name=copy.model_name,
            model_dir=model_dir,
            host=host,
            port=free_port(host),
            log_path=self.config.resolved_data_dir / "logs" / "copies" / f"{copy.copy_id}.log",
            memory_estimate_bytes=copy.memory_estimate_bytes,
            model_files=tuple((f.path, f.sha256, f.size_bytes) for f in files),
            store_root=str(self.registry.store.root),
            kind=record.kind,
        )
        copy.launched = await asyncio.to_thread(self.launcher.launch, request)
        copy.client = CopyClient(
            copy.launched.host,
            copy.launched.port,
            token=copy.launched.token,
            request_model=copy.launched.request_model,
        )

    async def _wait_healthy(self, copy: ModelCopy) -> None:
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
                self._on_ready(copy)
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

    def _on_ready(self, copy: ModelCopy) -> None:
        took = time.monotonic() - copy.started_mono
        log.info(
            "copy ready",
            extra={
                "model": copy.model_name,
                "copy_id": copy.copy_id,
                "seconds": round(took, 3),
                "url": copy.url,
            },
        )
        if self._events is not None:
            self._events.copy_ready(copy, took)

    async def _watch(self, copy: ModelCopy) -> None:
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
                self.begin_stop(copy, "the gateway that scales it stopped it")
                return
            if code is not None:
                self.fail(copy, f"the process exited with code {code}{_tail(launched)}")
                return
            healthy = await self._healthy(client, launched)
            misses = 0 if healthy else misses + 1
            if misses >= self.settings.health_failures_before_failed:
                self.fail(copy, f"{misses} health checks of {launched.health_path} failed in a row")
                return

    async def _shut_down(self, copy: ModelCopy) -> None:
        """Stop the copy's process: SIGTERM (it drains), SIGKILL after the drain bound.

        A copy this gateway does not own (another gateway scales it: ``launched.owned``, which
        only :mod:`outcrop.serving.gateways` sets) is only forgotten here.
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
