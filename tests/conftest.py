"""Shared fixtures: tiny models (built once per session), configs, real server processes, databases."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from outcrop.config import OutcropConfig
from outcrop.envs import load_config, test_postgres_url
from outcrop.testing.tiny_models import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
# Credentials of the admin that test servers create on first start (boto3_client signs with test/test).
TEST_ACCESS_KEY_ID = "test"
TEST_SECRET_ACCESS_KEY = "test"
TEST_API_KEY = "test-api-key-0001"
AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
# An httpx client that authenticates like the admin, for the admin API and raw-HTTP tests.
api = httpx.Client(headers=AUTH, timeout=60)
SERVER_START_TIMEOUT_SECONDS = 90


# -- tiny models ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_model_cache(family="llama", **spec)`` -> a folder built once per session (do not modify it)."""
    built: dict[tuple[tuple[str, Any], ...], Path] = {}

    def get(**spec: Any) -> Path:
        spec.setdefault("family", "llama")
        key = tuple(sorted(spec.items()))
        if key not in built:
            built[key] = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", **spec)
        return built[key]

    return get


@pytest.fixture
def tiny_model(tiny_model_cache: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """``tiny_model(family="qwen2", **spec)`` -> a fresh copy of a cached tiny model, safe to modify."""
    counter = iter(range(1000))

    def make(family: str = "llama", **spec: Any) -> Path:
        source = tiny_model_cache(family=family, **spec)
        dest = tmp_path / "models" / f"{family}-{next(counter)}"
        shutil.copytree(source, dest)
        return dest

    return make


# -- configuration --------------------------------------------------------------------


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., OutcropConfig]:
    """``make_config(**dotted_overrides)`` -> a config whose data dir and import root are this test's tmp dir."""

    def make(**overrides: Any) -> OutcropConfig:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "registry.allowed_roots": [tmp_path],
            "store.job_lease_seconds": 2.0,
            "auth.bootstrap_access_key_id": TEST_ACCESS_KEY_ID,
            "auth.bootstrap_secret_access_key": TEST_SECRET_ACCESS_KEY,
            "auth.bootstrap_api_key": TEST_API_KEY,
        }
        values.update(overrides)
        return load_config(**values)

    return make


# -- databases ------------------------------------------------------------------------


def _postgres_available(url: str) -> bool:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = test_postgres_url()
    if not url or not _postgres_available(url):
        pytest.skip(f"PostgreSQL is not reachable at {url}; run scripts/ensure-postgres.sh")
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"outcrop_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against SQLite and against a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outcrop.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# -- real server processes ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto in server mode) on a free loopback port, for the session;
    tests create buckets with unique names in it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class ServerProcess:
    """An ``outcrop serve`` subprocess on loopback."""

    data_dir: Path
    env: dict[str, str]
    import_root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.log_path = self.data_dir.parent / f"server-{self.port}-{int(time.time() * 1000)}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        cmd = [
            sys.executable,
            "-m",
            "outcrop",
            "--data-dir",
            str(self.data_dir),
            "serve",
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def server_env(tmp_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    env.update(
        {
            "OUTCROP_REGISTRY__ALLOWED_ROOTS": f'["{tmp_root}"]',
            "OUTCROP_STORE__JOB_LEASE_SECONDS": "2",
            "OUTCROP_AUTH__BOOTSTRAP_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "OUTCROP_AUTH__BOOTSTRAP_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
            "OUTCROP_AUTH__BOOTSTRAP_API_KEY": TEST_API_KEY,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(data_dir=None, **env)`` -> a running server (stopped after the test)."""
    started: list[ServerProcess] = []

    def start(data_dir: Path | None = None, **env: str) -> ServerProcess:
        server = ServerProcess(
            data_dir=data_dir or tmp_path / "data", env=server_env(tmp_path, **env), import_root=tmp_path
        )
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the e2e tests that do not need a fresh one (faster)."""
    root = tmp_path_factory.mktemp("shared-server")
    server = ServerProcess(data_dir=root / "data", env=server_env(root), import_root=root).start()
    yield server
    server.stop()


def boto3_client(service: str, url: str, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
        config=Config(**{"retries": {"max_attempts": 1}, **config}),
    )


def wait_for_job(bedrock: Any, job_arn: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = bedrock.get_model_import_job(jobIdentifier=job_arn)
        if job["status"] != "InProgress":
            return job
        time.sleep(0.1)
    raise AssertionError(f"import job {job_arn} still InProgress after {timeout} s")


@dataclass
class ServingServer:
    """A running server with two imported tiny models: ``chat`` (has a chat template) and ``plain`` (has none)."""

    server: ServerProcess
    chat: str
    plain: str
    chat_arn: str

    @property
    def url(self) -> str:
        return self.server.url


def import_and_wait(bedrock: Any, folder: Path, name: str) -> dict[str, Any]:
    arn = bedrock.create_model_import_job(
        jobName=f"import-{name}".replace("_", "-"),
        importedModelName=name,
        roleArn="arn:aws:iam::123456789012:role/Importer",
        modelDataSource={"s3DataSource": {"s3Uri": str(folder)}},
    )["jobArn"]
    job = wait_for_job(bedrock, arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    return job


@pytest.fixture(scope="session")
def serving_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[ServingServer]:
    root = tmp_path_factory.mktemp("serving-server")
    env = server_env(root, OUTCROP_SERVING__WORKER_THREADS="1")
    server = ServerProcess(data_dir=root / "data", env=env, import_root=root).start()
    bedrock = boto3_client("bedrock", server.url)
    for name, spec in (("chat", {"family": "llama"}), ("plain", {"family": "qwen2", "chat_template": False})):
        dest = root / name
        shutil.copytree(tiny_model_cache(**spec), dest)
        job = import_and_wait(bedrock, dest, name)
        if name == "chat":
            chat_arn = job["importedModelArn"]
    for name in ("chat", "plain"):
        response = api.post(f"{server.url}/outcrop/models/{name}/warm", json={"copies": 1}, timeout=180)
        assert response.status_code == 200, response.text
    yield ServingServer(server=server, chat="chat", plain="plain", chat_arn=chat_arn)
    server.stop()
