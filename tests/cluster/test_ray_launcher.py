"""The ``ray`` launcher: copies in Ray actors on two nodes, a lost node, no leaks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from outcrop.cluster.ray_launcher import RayCopy
from outcrop.config import OutcropConfig
from outcrop.errors import OutcropError
from outcrop.registry.service import Registry
from outcrop.serving.copies import CopyStatus
from outcrop.serving.service import ColdStartPolicy, Serving
from tests.cluster.conftest import RayTestCluster, import_models, namespace_actors

pytestmark = [pytest.mark.anyio, pytest.mark.ray]

HOLD = ColdStartPolicy(wait=True, max_wait_seconds=30)
PROMPT = {"prompt": "Hello", "max_tokens": 3}
TWO_COPIES = {"serving.model_overrides": {"alpha": {"min_copies": 2, "max_copies": 2}}}
TWO_EACH = {"serving.defaults.max_copies": 2}

Config = Callable[..., OutcropConfig]


async def eventually(check: Callable[[], bool], timeout_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def ray_copies(serving: Serving, status: CopyStatus = CopyStatus.READY) -> dict[str, RayCopy]:
    found = {}
    for copy in serving.fleet.all_copies():
        if copy.status is status and isinstance(copy.launched, RayCopy):
            found[copy.copy_id] = copy.launched
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def test_copies_spread_over_two_nodes_and_a_lost_node_is_replaced_while_requests_succeed(
    ray_config: Config, cluster_registry: Registry, ray_cluster: RayTestCluster
) -> None:
    config = ray_config(**TWO_COPIES)
    serving = Serving(config, cluster_registry)
    await serving.start()
    try:
        await serving.warm("alpha", copies=2)
        copies = ray_copies(serving)
        assert len(copies) == 2
        assert len({c.node_id for c in copies.values()}) == 2, "SPREAD puts the two copies on two nodes"
        assert all(
            c.url.startswith("http://") and not c.url.startswith("http://127.") for c in copies.values()
        )

        answered: list[str] = []
        failures: list[OutcropError] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                try:
                    answer = await serving.post("alpha", "/v1/completions", PROMPT, cold_start=HOLD)
                    answered.append(answer["system_fingerprint"])
                except OutcropError as exc:  # a clean, typed failure (never a hang)
                    failures.append(exc)

        clients = [asyncio.create_task(client()) for _ in range(4)]
        await eventually(lambda: len(answered) > 20)
        lost_id, lost = next(iter(copies.items()))
        survivor = next(c for i, c in copies.items() if i != lost_id)
        lost_pid = lost.pid
        assert lost_pid is not None and alive(lost_pid)
        killed_at = time.monotonic()
        ray_cluster.remove_worker(lost.node_id)

        await eventually(lambda: lost_id not in ray_copies(serving))
        noticed = time.monotonic() - killed_at
        await eventually(lambda: len(ray_copies(serving)) == 2)
        replaced = time.monotonic() - killed_at
        replacement = next(c for i, c in ray_copies(serving).items() if i not in copies)
        assert replacement.node_id == survivor.node_id, "the replacement runs on the node that is left"
        served_before = len(answered)
        await eventually(lambda: len(answered) > served_before + 20)
        stop.set()
        await asyncio.gather(*clients)
        print(f"lost copy noticed after {noticed:.2f} s, replacement ready after {replaced:.2f} s")
        assert noticed < 10
        await eventually(lambda: not alive(lost_pid), timeout_seconds=5)  # it died with its node
        assert failures == [], f"requests failed: {failures[:3]}"
        assert serving.stats()["models"]["alpha"]["copy_failures"] == 1
    finally:
        await serving.stop()
        ray_cluster.add_worker()
    await eventually(lambda: namespace_actors(config.ray.namespace) == [], timeout_seconds=5)


async def test_stopping_the_gateway_stops_its_copies_and_their_actors(
    ray_config: Config, cluster_registry: Registry
) -> None:
    config = ray_config()
    serving = Serving(config, cluster_registry)
    await serving.start()
    try:
        await serving.warm("beta")
        pids = [c.pid for c in ray_copies(serving).values()]
        assert len(namespace_actors(config.ray.namespace)) == 1
    finally:
        await serving.stop()
    assert pids
    await eventually(lambda: not any(pid is not None and alive(pid) for pid in pids), timeout_seconds=5)
    await eventually(lambda: namespace_actors(config.ray.namespace) == [], timeout_seconds=5)


async def test_a_copy_needing_more_than_any_node_has_fails_with_the_resources_named(
    ray_config: Config, cluster_registry: Registry
) -> None:
    config = ray_config(
        **{"ray.model_resources": {"beta": {"num_cpus": 8}}, "ray.placement_timeout_seconds": 1}
    )
    serving = Serving(config, cluster_registry)
    await serving.start()
    try:
        with pytest.raises(OutcropError, match="8 CPU"):
            await serving.warm("beta")
    finally:
        await serving.stop()
    assert namespace_actors(config.ray.namespace) == []


async def test_copies_of_a_model_deleted_through_another_gateway_are_stopped(
    ray_config: Config, cluster_registry: Registry, tiny_model_cache: Callable[..., Path]
) -> None:
    import_models(cluster_registry, tiny_model_cache(family="llama"), ("doomed",))
    config = ray_config()
    serving = Serving(config, cluster_registry)
    await serving.start()
    try:
        await serving.warm("doomed")
        assert len(namespace_actors(config.ray.namespace)) == 1
        cluster_registry.delete_model("doomed")  # as another gateway's DeleteImportedModel does
        await eventually(lambda: namespace_actors(config.ray.namespace) == [], timeout_seconds=15)
        assert serving.copies() == []
    finally:
        await serving.stop()


async def test_a_second_gateway_routes_to_the_scalers_copies_and_sees_a_scale_in_as_a_stop(
    ray_config: Config, cluster_registry: Registry
) -> None:
    config = ray_config()
    scaler, router = Serving(config, cluster_registry), Serving(config, cluster_registry)
    await scaler.start()
    try:
        await eventually(lambda: scaler.gateways.scaler)
        await router.start()
        await scaler.warm("beta")
        (copy_id,) = ray_copies(scaler)
        await eventually(lambda: list(ray_copies(router)) == [copy_id])
        assert not router.gateways.may_autoscale() and not ray_copies(router)[copy_id].owned
        answer = await router.post("beta", "/v1/completions", PROMPT, cold_start=HOLD)
        assert answer["system_fingerprint"] == f"nullcopy:{ray_copies(scaler)[copy_id].port}"

        (copy,) = scaler.fleet.all_copies()
        scaler.fleet.begin_stop(copy, "scale-in")  # what the autoscaler does when idle
        await eventually(lambda: router.copies() == [])
        stats = router.stats()["models"]["beta"]
        assert stats["copy_failures"] == 0, stats["last_failure"]
    finally:
        await router.stop()
        await scaler.stop()
    await eventually(lambda: namespace_actors(config.ray.namespace) == [], timeout_seconds=5)


async def test_outcrops_own_worker_runs_in_an_actor_on_the_models_verified_folder(
    ray_config: Config, cluster_registry: Registry, ray_cluster: RayTestCluster
) -> None:
    config = ray_config(
        **{
            "ray.copy_launcher": "local",
            "serving.worker_threads": 1,
            "serving.copy_start_timeout_seconds": 120.0,
            "ray.num_cpus": 1.0,
        }
    )
    serving = Serving(config, cluster_registry)
    await serving.start()
    try:
        answer = await serving.post(
            "alpha", "/v1/completions", {"prompt": "Hello", "max_tokens": 4}, cold_start=HOLD
        )
        assert 1 <= answer["usage"]["completion_tokens"] <= 4
        (launched,) = ray_copies(serving).values()
        assert launched.node_id in {n.node_id for n in ray_cluster.workers}
    finally:
        await serving.stop()
    await eventually(lambda: namespace_actors(config.ray.namespace) == [], timeout_seconds=5)


async def test_the_copies_of_each_model_are_spread_over_the_nodes(
    ray_config: Config, cluster_registry: Registry
) -> None:
    config = ray_config(**TWO_EACH, **{"ray.num_cpus": 0.25})
    serving = Serving(config, cluster_registry)
    await serving.start()
    try:
        await asyncio.gather(serving.warm("alpha", copies=2), serving.warm("beta", copies=2))
        by_model: dict[str, set[str]] = {}
        for copy in serving.fleet.all_copies():
            assert isinstance(copy.launched, RayCopy)
            by_model.setdefault(copy.model_name, set()).add(copy.launched.node_id)
        assert {name: len(nodes) for name, nodes in by_model.items()} == {"alpha": 2, "beta": 2}
    finally:
        await serving.stop()
    await eventually(lambda: namespace_actors(config.ray.namespace) == [], timeout_seconds=5)
