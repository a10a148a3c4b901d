"""A Ray cluster of one head and two worker nodes on this machine (one per test session),
imported tiny models, and configs whose copies are null copies run by Ray actors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from outcrop.config import OutcropConfig
from outcrop.envs import load_config
from outcrop.registry.importer import ImportWorker
from outcrop.registry.service import CreateImportJob, Registry
from outcrop.store.db import Database

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

MODEL_NAMES = ("alpha", "beta")
# Small: this machine has 2 cores and 24 GiB, shared with the rest of the suite.
OBJECT_STORE_BYTES = 80 * 1024**2
# Ray notices a lost node within ~1 s (default: tens of seconds).
FAST_HEALTH = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 2,
    "health_check_initial_delay_ms": 0,
}
# Each worker node offers one CPU; a copy reserves half, so two copies fit on one node.
COPY_CPUS = 0.5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RayTestCluster:
    """The head (no CPUs, so no copy lands there) plus worker nodes that tests may remove and add."""

    def __init__(self) -> None:
        self.cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                "object_store_memory": OBJECT_STORE_BYTES,
                "_system_config": FAST_HEALTH,
            },
        )
        self.workers: list[Any] = []
        for _ in range(2):
            self.add_worker()
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_worker(self) -> Any:
        node = self.cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
        self.workers.append(node)
        return node

    def remove_worker(self, node_id: str) -> None:
        node = next(n for n in self.workers if n.node_id == node_id)
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        ray.shutdown()
        self.cluster.shutdown()


# Package scope: the cluster's processes (GCS, raylets, monitor) stop when the last test of this
# folder ends, rather than idling through the rest of the suite on CI's two cores.
@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[RayTestCluster]:
    cluster = RayTestCluster()
    ray.init(address=cluster.address, namespace="outcrop-tests", include_dashboard=False, log_to_driver=False)
    yield cluster
    cluster.shutdown()


def import_models(registry: Registry, source: Path, names: tuple[str, ...] = MODEL_NAMES) -> None:
    importer = ImportWorker(registry)
    for name in names:
        job = registry.create_import_job(
            CreateImportJob(job_name=f"import-{name}", imported_model_name=name, source_uri=str(source))
        )
        assert registry.jobs.claim(job.id, importer.worker_id, 30)
        importer.run(job.id)
        assert registry.get_job(job.id).status.value == "Completed"


@pytest.fixture(scope="session")
def cluster_registry(
    tiny_model_cache: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Registry:
    """A registry (SQLite) holding the tiny llama as alpha and beta."""
    source = tiny_model_cache(family="llama")
    root = tmp_path_factory.mktemp("cluster-registry")
    config = load_config(data_dir=root / "data", **{"registry.allowed_roots": [source.parent]})
    db = Database(config.database_url)
    db.migrate()
    registry = Registry(config, db)
    import_models(registry, source)
    return registry


def nullcopy_template() -> str:
    return (
        f"{sys.executable} -m outcrop.testing.nullcopy --port {{port}} --host {{host}} "
        "--served-name {served_name} --model-dir {model_dir}"
    )


@pytest.fixture
def ray_config(ray_cluster: RayTestCluster, tmp_path: Path) -> Callable[..., OutcropConfig]:
    """``ray_config(**dotted_overrides)``: the ray launcher on the test cluster, null copies, fast timers."""
    namespaces = iter(range(1000))

    def make(**overrides: Any) -> OutcropConfig:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "serving.launcher": "ray",
            "serving.command_template": nullcopy_template(),
            "serving.autoscaler_interval_seconds": 0.1,
            "serving.health_interval_seconds": 0.2,
            "serving.restart_backoff_initial_seconds": 0.2,
            "serving.drain_timeout_seconds": 5.0,
            "serving.copy_start_timeout_seconds": 30.0,
            "ray.address": ray_cluster.address,
            "ray.namespace": f"t-{tmp_path.name[-20:]}-{next(namespaces)}",
            "ray.copy_launcher": "command",
            "ray.num_cpus": COPY_CPUS,
            "ray.sync_interval_seconds": 0.2,
            "ray.scaler_lease_seconds": 2.0,
            "ray.placement_timeout_seconds": 20.0,
        }
        values.update(overrides)
        return load_config(**values)

    return make


def namespace_actors(namespace: str) -> list[str]:
    return sorted(
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace
    )
