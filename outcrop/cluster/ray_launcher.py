"""The ``ray`` launcher: each copy in a Ray actor on whichever node has its resources.

Ray places the actor (``num_cpus`` / ``num_gpus`` / ``memory`` from the model's recorded
memory estimate, ``ray.model_resources`` per model; with ``ray.spread``, preferably on the
live node with the fewest copies of the model, see :func:`pick_node`), the actor prepares a verified model folder on its node and starts the
command the ``ray.copy_launcher`` launcher builds, bound to the node's IP; the router reaches
it at ``http://<node-ip>:<port>``.

Actors are named (``outcrop-copy-<copy id>``) and detached in the ``ray.namespace``, so every
gateway of a store finds every copy (:meth:`RayLauncher.discover`) and a restarted gateway
adopts or removes what a crashed one left. A lost node or actor shows at once in
:meth:`RayCopy.exit_code`: the gateway keeps one ``wait_exit`` call pending per copy, and Ray
fails it with ``ActorDiedError`` when the actor or its node dies.

Each copy's token (the secret it requires, see :mod:`outcrop.cluster.launchers`) is kept by
its actor, which hands it to the copy's process in its environment and to a gateway that
adopts the copy in :meth:`CopyActor.describe`. Why there rather than derived from a key the
gateways share through the store (``HMAC(key, copy id)``): adoption already reads everything
it needs from the actor, which lives exactly as long as the copy; no new secret has to be
created, stored and rotated in the database; and whoever can call an actor of the namespace
can already run any code on the cluster (Ray has no authentication of its own), so the actor
holding the token exposes nothing new.
"""

from __future__ import annotations

import collections
import logging
import math
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from outcrop.cluster.copy_actor import CopyActor
from outcrop.cluster.launchers import (
    STOPPED_EXIT_CODES,
    FoundCopy,
    Launcher,
    LaunchRequest,
    process_launcher,
    url_host,
)
from outcrop.cluster.processes import read_log_tail
from outcrop.config import OutcropConfig, RayConfig, RayCopyResources
from outcrop.envs import worker_id_hint
from outcrop.errors import ConfigError, ServiceUnavailableError

log = logging.getLogger("outcrop.cluster")

ACTOR_PREFIX = "outcrop-copy-"
# Exit code reported for a copy whose actor or node died (as if SIGKILLed).
LOST_EXIT_CODE = -int(signal.SIGKILL)
# Why 3 s: a copy asked to exit with SIGKILL is gone in milliseconds; an actor that has not
# reported it by then is stuck or on a lost node, and Ray kills it instead.
KILL_ESCALATE_SECONDS = 3.0
# Why 2 s: describing a live actor takes milliseconds; one that does not answer is not adopted.
DESCRIBE_TIMEOUT_SECONDS = 2.0

_RemoteCopyActor: Any = None


def _actor_class() -> Any:
    global _RemoteCopyActor
    if _RemoteCopyActor is None:
        _RemoteCopyActor = ray.remote(max_restarts=0, max_task_retries=0)(CopyActor)
    return _RemoteCopyActor


def connect(config: RayConfig) -> None:
    """Join the configured Ray cluster once per process (a driver already connected is reused)."""
    if ray.is_initialized():
        return
    address = None if config.address == "local" else config.address
    try:
        ray.init(
            address=address,
            namespace=config.namespace,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"Cannot join the Ray cluster at ray.address '{config.address}': {exc}. Start one "
            "(`ray start --head`), or set OUTCROP_RAY_ADDRESS to 'auto', 'ray://head:10001' or 'local'."
        ) from None


def copy_resources(cfg: RayConfig, request: LaunchRequest) -> dict[str, Any]:
    """The actor options that reserve one copy's CPUs, GPUs and memory (a per-model override wins)."""
    override = cfg.model_resources.get(request.served_name) or cfg.model_resources.get(request.model_id)
    override = override or RayCopyResources()
    options: dict[str, Any] = {
        "num_cpus": cfg.num_cpus if override.num_cpus is None else override.num_cpus,
        "num_gpus": cfg.num_gpus if override.num_gpus is None else override.num_gpus,
    }
    memory = override.memory_bytes
    if memory is None and cfg.reserve_memory and request.memory_estimate_bytes > 0:
        memory = request.memory_estimate_bytes
    if memory:
        options["memory"] = memory
    return options


def pick_node(
    nodes: list[dict[str, Any]],
    resources: dict[str, Any],
    model_copies: collections.Counter[str],
    all_copies: collections.Counter[str],
) -> str | None:
    """The node for a model's next copy: among live nodes big enough for it, the one with the fewest
    copies of this model, then the fewest copies in all; None when no node is big enough."""

    def fits(node: dict[str, Any]) -> bool:
        total = node.get("Resources", {})
        return bool(
            total.get("CPU", 0) >= resources["num_cpus"]
            and total.get("GPU", 0) >= resources["num_gpus"]
            and total.get("memory", math.inf) >= resources.get("memory", 0)
        )

    candidates = [str(n["NodeID"]) for n in nodes if n.get("Alive") and fits(n)]
    if not candidates:
        return None
    return min(candidates, key=lambda node_id: (model_copies[node_id], all_copies[node_id]))


class RayCopy:
    """A copy running in a Ray actor (the fleet's :class:`~outcrop.cluster.launchers.LaunchedCopy`)."""

    def __init__(
        self,
        actor: Any,
        *,
        host: str,
        port: int,
        health_path: str,
        log_path: Path,
        pid: int | None,
        owned: bool,
        node_id: str = "",
        request_model: str | None = None,
        token: str = "",
    ) -> None:
        self.actor = actor
        self.token = token
        self.host = host
        self.port = port
        self.url = f"http://{url_host(host)}:{port}"
        self.health_path = health_path
        self.log_path = log_path
        self.owned = owned
        self.node_id = node_id
        self.request_model = request_model
        self._pid = pid
        self._exit_ref = actor.wait_exit.remote()
        self._code: int | None = None
        self._lost: str | None = None
        self._kill_sent_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    def exit_code(self) -> int | None:
        if self._code is not None:
            return self._code
        ready, _ = ray.wait([self._exit_ref], timeout=0)
        if ready:
            try:
                self._code = int(ray.get(self._exit_ref))
            except RayError as exc:
                self._lost = f"its Ray actor or node was lost ({type(exc).__name__})"
                self._code = LOST_EXIT_CODE
        elif self._kill_sent_at is not None and time.monotonic() - self._kill_sent_at > KILL_ESCALATE_SECONDS:
            self._kill_sent_at = None
            ray.kill(self.actor, no_restart=True)
        return self._code

    def terminate(self) -> None:
        if self.owned:
            self.actor.signal.remote(int(signal.SIGTERM))

    def kill(self) -> None:
        if self.owned and self._code is None:
            self.actor.signal.remote(int(signal.SIGKILL))
            if self._kill_sent_at is None:
                self._kill_sent_at = time.monotonic()

    def release(self) -> None:
        if not self.owned:
            return
        try:
            if self._code in STOPPED_EXIT_CODES:
                # A clean stop: the actor ends itself a moment later, so the other gateways' exit
                # watches read code 0 (a scale-in) rather than a lost actor (a failure).
                self.actor.shutdown.remote()
            else:
                ray.kill(self.actor, no_restart=True)
        except RayError:
            pass

    def log_tail(self, max_chars: int = 600) -> str:
        tail = read_log_tail(self.log_path, max_chars)  # the nodes of one machine share the data dir
        if not tail and self._lost is None:
            try:
                tail = str(ray.get(self.actor.log_tail.remote(max_chars), timeout=1.0))
            except RayError:
                tail = ""
        return f"{self._lost}; {tail}" if self._lost else tail


class RayLauncher:
    """Starts copies in Ray actors (see the module docstring)."""

    name: ClassVar[str] = "ray"
    uses_local_memory: ClassVar[bool] = False
    shares_copies: ClassVar[bool] = True

    def __init__(self, config: OutcropConfig) -> None:
        self.config = config
        self.settings = config.ray
        self.inner: Launcher = process_launcher(self.settings.copy_launcher, config.serving)
        self.owner = worker_id_hint()
        connect(self.settings)
        # Placements this gateway chose whose actors may not be listed yet: (model id, node id) -> count.
        self._placing: collections.Counter[tuple[str, str]] = collections.Counter()
        self._placing_lock = threading.Lock()

    def command(self, request: LaunchRequest) -> list[str]:
        return self.inner.command(request)

    def health_path(self) -> str:
        return self.inner.health_path()

    def copy_env(self, request: LaunchRequest) -> dict[str, str]:
        return self.inner.copy_env(request)

    def request_model(self, request: LaunchRequest) -> str | None:
        return self.inner.request_model(request)

    def launch(self, request: LaunchRequest) -> RayCopy:
        target = self._choose_node(request.model_id, copy_resources(self.settings, request))
        try:
            return self._launch(request, target)
        finally:
            if target is not None:
                with self._placing_lock:
                    self._placing[(request.model_id, target)] -= 1

    def _choose_node(self, model_id: str, resources: dict[str, Any]) -> str | None:
        """With ``ray.spread``: the node with the fewest copies of the model (counted as placing)."""
        if not self.settings.spread:
            return None
        model_copies: collections.Counter[str] = collections.Counter()
        all_copies: collections.Counter[str] = collections.Counter()
        for _, _, info in self._describe_all(set()):
            all_copies[info["node_id"]] += 1
            if info["model_id"] == model_id:
                model_copies[info["node_id"]] += 1
        with self._placing_lock:
            for (placing_model, node_id), n in self._placing.items():
                all_copies[node_id] += n
                if placing_model == model_id:
                    model_copies[node_id] += n
            target = pick_node(ray.nodes(), resources, model_copies, all_copies)
            if target is not None:
                self._placing[(model_id, target)] += 1
        return target

    def _strategy(self, model_id: str, resources: dict[str, Any], target: str | None) -> Any:
        if target is not None:
            # Soft, and spilling to another node when the target has no room now (as Ray Serve does).
            return NodeAffinitySchedulingStrategy(target, soft=True, _spill_on_unavailable=True)
        return "SPREAD" if self.settings.spread else "DEFAULT"

    def _launch(self, request: LaunchRequest, target: str | None) -> RayCopy:
        cfg = self.settings
        resources = copy_resources(cfg, request)
        actor = (
            _actor_class()
            .options(
                name=ACTOR_PREFIX + request.copy_id,
                namespace=cfg.namespace,
                lifetime="detached",
                scheduling_strategy=self._strategy(request.model_id, resources, target),
                **resources,
            )
            .remote(request.copy_id, request.model_id, request.served_name, self.owner)
        )
        try:
            try:
                host, port, node_id = ray.get(
                    actor.address.remote(cfg.copy_host), timeout=cfg.placement_timeout_seconds
                )
            except GetTimeoutError:
                raise ServiceUnavailableError(
                    f"No node of the Ray cluster had {_describe(resources)} free for a copy of "
                    f"'{request.served_name}' within {cfg.placement_timeout_seconds:g} s "
                    "(ray.placement_timeout_seconds). Add nodes, or lower ray.model_resources for the model "
                    "(`ray status` shows what is free).",
                    retry_after_seconds=10.0,
                ) from None
            files = list(request.model_files)
            cache = str(cfg.node_cache_dir) if cfg.node_cache_dir else None
            model_dir = ray.get(
                actor.prepare_model.remote(str(request.model_dir), files, request.store_root, cache),
                timeout=self.config.serving.copy_start_timeout_seconds,
            )
            bind = cfg.copy_host or host
            on_node = replace(request, host=bind, port=port, model_dir=Path(model_dir))
            argv = self.inner.command(on_node)
            env = self.inner.copy_env(on_node)
            request_model = self.inner.request_model(on_node)
            url = f"http://{url_host(host)}:{port}"
            pid = ray.get(
                actor.start.remote(
                    argv, str(request.log_path), url, self.health_path(), request_model, env, request.token
                ),
                timeout=cfg.call_timeout_seconds,
            )
        except BaseException:
            ray.kill(actor, no_restart=True)
            raise
        log.info(
            "copy actor placed",
            extra={"copy_id": request.copy_id, "node_id": node_id, "url": url, "resources": resources},
        )
        return RayCopy(
            actor,
            host=host,
            port=port,
            health_path=self.health_path(),
            log_path=request.log_path,
            pid=pid,
            owned=True,
            node_id=node_id,
            request_model=request_model,
            token=request.token,
        )

    def _describe_all(self, known: set[str]) -> list[tuple[str, Any, dict[str, Any]]]:
        """(copy id, actor, description) of the namespace's copy actors not in ``known`` that answer."""
        names = [
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["namespace"] == self.settings.namespace
            and entry["name"].startswith(ACTOR_PREFIX)
            and entry["name"][len(ACTOR_PREFIX) :] not in known
        ]
        asked: list[tuple[str, Any, Any]] = []
        for name in names:
            try:
                actor = ray.get_actor(name, namespace=self.settings.namespace)
            except ValueError:
                continue  # it ended between the listing and now
            asked.append((name[len(ACTOR_PREFIX) :], actor, actor.describe.remote()))
        if not asked:
            return []
        refs = [ref for _, _, ref in asked]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=DESCRIBE_TIMEOUT_SECONDS)
        done = set(ready)
        described: list[tuple[str, Any, dict[str, Any]]] = []
        for copy_id, actor, ref in asked:
            if ref not in done:
                continue  # still being placed, or on a node that stopped answering
            try:
                described.append((copy_id, actor, dict(ray.get(ref))))
            except RayError:
                continue  # it died meanwhile
        return described

    def discover(self, known: set[str]) -> list[FoundCopy]:
        """The copy actors of the namespace that ``known`` lacks, described (an unreachable one is skipped)."""
        found: list[FoundCopy] = []
        for copy_id, actor, info in self._describe_all(known):
            if not info["url"]:
                continue  # still starting on another gateway: found again next round
            launched = RayCopy(
                actor,
                host=info["host"],
                port=int(info["port"]),
                health_path=info["health_path"],
                log_path=Path(info["log_path"]),
                pid=info["pid"],
                owned=False,
                node_id=info["node_id"],
                request_model=info.get("request_model"),
                token=str(info.get("token") or ""),
            )
            found.append(
                FoundCopy(
                    copy_id=copy_id,
                    model_id=info["model_id"],
                    launched=launched,
                    started_at=float(info["started_at"]),
                    running=info["exit_code"] is None,
                )
            )
        return found

    def close(self) -> None:
        return None


def _describe(resources: dict[str, Any]) -> str:
    parts = [f"{resources['num_cpus']:g} CPU(s)"]
    if resources.get("num_gpus"):
        parts.append(f"{resources['num_gpus']:g} GPU(s)")
    if resources.get("memory"):
        parts.append(f"{resources['memory'] / 1024**3:.2f} GiB of memory")
    return ", ".join(parts)
