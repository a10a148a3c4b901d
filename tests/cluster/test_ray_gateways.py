"""Several ``outcrop serve`` gateways on one PostgreSQL and one Ray cluster: they share the
copies, one autoscales at a time, and a gateway that crashed leaves copies the next one adopts."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from outcrop.cluster.launchers import LaunchRequest
from outcrop.cluster.node_models import MANIFEST_NAME, manifest_body
from outcrop.cluster.ray_launcher import RayLauncher
from outcrop.envs import load_config
from outcrop.registry.service import Registry
from outcrop.store.db import Database
from outcrop.store.leases import AUTOSCALER_LEASE, GATEWAY_PREFIX, Leases
from tests.cluster.conftest import (
    COPY_CPUS,
    RayTestCluster,
    import_models,
    namespace_actors,
    nullcopy_template,
)
from tests.conftest import AUTH, ServerProcess

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.e2e]

PROMPT = {"model": "alpha", "prompt": "Hello", "max_tokens": 3}


def eventually(check: Callable[[], bool], timeout_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def ready_copies(server: ServerProcess) -> dict[str, str]:
    """copy id -> url of the Ready copies the gateway routes to."""
    body = httpx.get(f"{server.url}/outcrop/copies", headers=AUTH, timeout=10).json()
    return {c["copyId"]: c["url"] for c in body["copies"] if c["state"] == "Ready"}


def answered_by(server: ServerProcess, requests: int = 12) -> set[str]:
    """The copies (``nullcopy:<port>``) that answered ``requests`` completions sent through the gateway."""
    seen = set()
    with httpx.Client(headers=AUTH, timeout=30) as client:
        for _ in range(requests):
            response = client.post(f"{server.url}/v1/completions", json=PROMPT)
            assert response.status_code == 200, response.text
            seen.add(response.json()["system_fingerprint"])
    return seen


def ports(urls: dict[str, str]) -> set[str]:
    return {f"nullcopy:{u.rsplit(':', 1)[-1]}" for u in urls.values()}


def scaler_pid(leases: Leases) -> int | None:
    holder = leases.holder(AUTOSCALER_LEASE)
    return int(holder.split(":")[1]) if holder else None


def test_two_gateways_share_copies_one_autoscales_and_a_crashed_ones_copies_are_adopted(
    ray_cluster: RayTestCluster,
    postgres_url: str,
    start_server: Callable[..., ServerProcess],
    tiny_model_cache: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    source = tiny_model_cache(family="llama")
    namespace = f"gw-{tmp_path.name[-16:]}"
    config = load_config(
        data_dir=data,
        **{
            "store.database_url": postgres_url,
            "registry.allowed_roots": [source.parent],
            "ray.address": ray_cluster.address,
            "ray.namespace": namespace,
            "ray.copy_launcher": "command",
            "serving.command_template": nullcopy_template(),
        },
    )
    db = Database(postgres_url)
    db.migrate()
    import_models(Registry(config, db), source, ("alpha",))
    leases = Leases(db)
    env: dict[str, Any] = {
        "OUTCROP_DATABASE_URL": postgres_url,
        "OUTCROP_SERVING__LAUNCHER": "ray",
        "OUTCROP_SERVING__COMMAND_TEMPLATE": nullcopy_template(),
        "OUTCROP_SERVING__HEALTH_INTERVAL_SECONDS": "0.2",
        "OUTCROP_SERVING__AUTOSCALER_INTERVAL_SECONDS": "0.2",
        "OUTCROP_SERVING__MODEL_OVERRIDES": '{"alpha": {"max_copies": 2}}',
        "OUTCROP_RAY_ADDRESS": ray_cluster.address,
        "OUTCROP_RAY__NAMESPACE": namespace,
        "OUTCROP_RAY__COPY_LAUNCHER": "command",
        "OUTCROP_RAY__NUM_CPUS": str(COPY_CPUS),
        "OUTCROP_RAY__SYNC_INTERVAL_SECONDS": "0.2",
        "OUTCROP_RAY__SCALER_LEASE_SECONDS": "2",
    }
    a = start_server(data_dir=data, **env)
    b = start_server(data_dir=data, **env)
    gateways = {a.proc.pid: a, b.proc.pid: b}  # type: ignore[union-attr]

    # Copies warmed through one gateway are routed to by both; exactly one gateway scales.
    warmed = httpx.post(f"{a.url}/outcrop/models/alpha/warm", json={"copies": 2}, headers=AUTH, timeout=60)
    assert warmed.status_code == 200, warmed.text
    eventually(lambda: len(ready_copies(a)) == 2 and ready_copies(b) == ready_copies(a))
    copies = ready_copies(a)
    assert answered_by(a) == ports(copies)
    assert answered_by(b) == ports(copies)
    eventually(lambda: scaler_pid(leases) in gateways)
    assert len(leases.live_holders(GATEWAY_PREFIX)) == 2

    # The scaler stops: the other gateway takes the lease over and keeps the copies.
    scaler = gateways.pop(scaler_pid(leases))  # type: ignore[arg-type]
    other = next(iter(gateways.values()))
    scaler.stop()
    eventually(lambda: scaler_pid(leases) == other.proc.pid)  # type: ignore[union-attr]
    assert ready_copies(other) == copies
    assert answered_by(other) == ports(copies)

    # The last gateway crashes: its copies keep running; a restarted one adopts them and
    # removes a copy of a model that no longer exists.
    other.stop(signal.SIGKILL)
    assert len(namespace_actors(namespace)) == 2
    ghost_dir = tmp_path / "ghost"
    ghost_dir.mkdir()
    (ghost_dir / MANIFEST_NAME).write_text(__import__("json").dumps(manifest_body("ghost0000000", [])))
    stray = RayLauncher(config.model_copy(update={"ray": config.ray.model_copy(update={"num_cpus": 0.1})}))
    stray.launch(
        LaunchRequest(
            copy_id="copy-stray",
            model_id="ghost0000000",
            served_name="ghost",
            model_dir=ghost_dir,
            host="127.0.0.1",
            port=0,
            log_path=tmp_path / "stray.log",
        )
    )
    assert len(namespace_actors(namespace)) == 3
    c = start_server(data_dir=data, **env)
    eventually(lambda: ready_copies(c) == copies)
    eventually(lambda: scaler_pid(leases) == c.proc.pid)  # type: ignore[union-attr]
    eventually(lambda: len(namespace_actors(namespace)) == 2)  # the stray copy was removed
    assert answered_by(c) == ports(copies)
    c.stop()
    eventually(lambda: namespace_actors(namespace) == [], timeout_seconds=15)
    db.dispose()
