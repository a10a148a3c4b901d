"""Fixtures of the console's browser tests: a real server with a tiny model, keys by policy, and a
Playwright page on the system's Chromium.

Every test here is marked ``browser``. They need Debian's ``chromium`` (``scripts/test.sh`` installs
it with apt-get when it runs as root; otherwise ``sudo apt-get install -y chromium``) and Python's
Playwright (a dev extra); without either they skip, saying which. Run only them:
``.venv/bin/python -m pytest -m browser tests/browser``.

- ``console_server``: one ``outcrop serve`` process per test module (tests in a module may change
  what it holds: import, delete, create keys) with the imported text model ``console_server.model``
  (a tiny llama with a chat template, random weights) and the admin key ``console_server.admin_key``;
  ``console_server.import_model(name)`` imports another, ``console_server.import_root`` is a folder
  the server may import from.
- ``make_key(policy, model=None) -> str``: a new API key made through the keys API, with the built-in
  policy ``admin``, ``invoke-only`` (of ``model`` when given, else every model) or ``read-only``, or
  with a policy document (a dict) given as ``policy``.
- ``page``: a fresh Playwright page (its own context: empty session storage) in headless Chromium.
"""

from __future__ import annotations

import importlib.util
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    TEST_API_KEY,
    ServerProcess,
    boto3_client,
    import_and_wait,
    server_env,
)

# Why 1,400 x 900: the desktop width the console is designed at; narrow-layout tests set 760 themselves.
VIEWPORT = {"width": 1400, "height": 900}
POLICIES = ("admin", "invoke-only", "read-only")


NO_CHROMIUM = (
    "no `chromium` on PATH: install Debian's package (`sudo apt-get install -y chromium`; "
    "scripts/test.sh does it when run as root) to run the browser tests"
)
NO_PLAYWRIGHT = "Python's Playwright is not installed: pip install -e '.[dev]' (it is a dev extra)"


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which("chromium") is None:
        return NO_CHROMIUM
    if importlib.util.find_spec("playwright") is None:
        return NO_PLAYWRIGHT
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/browser ``browser`` (and ``e2e``); skip them up front, before any
    server starts, when there is no browser to drive."""
    here = Path(__file__).parent
    missing = _missing()
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.e2e)
            if missing:
                item.add_marker(pytest.mark.skip(reason=missing))


@dataclass
class ConsoleServer:
    """A running server for the console tests (see the module docstring)."""

    server: ServerProcess
    model: str
    model_arn: str
    admin_key: str
    _source: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def import_root(self) -> Path:
        """A folder inside the server's allowed import roots."""
        return self.server.import_root

    def console_url(self, key: str | None = None) -> str:
        """The console's address, signed in with ``key`` through the ``#key=`` fragment when given."""
        return f"{self.url}/console" + (f"#key={key}" if key else "")

    def import_model(self, name: str) -> str:
        """Import another copy of the tiny model as ``name``; its ARN."""
        dest = self.server.import_root / f"{name}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(self._source, dest)
        job = import_and_wait(boto3_client("bedrock", self.url), dest, name)
        return str(job["importedModelArn"])

    def api(self, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        """A raw call with a key (the admin's by default)."""
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[ConsoleServer]:
    root = tmp_path_factory.mktemp("console-server")
    env = server_env(root, OUTCROP_SERVING__WORKER_THREADS="1")
    server = ServerProcess(data_dir=root / "data", env=env, import_root=root).start()
    source = tiny_model_cache(family="llama")
    dest = root / "console-llama"
    shutil.copytree(source, dest)
    job = import_and_wait(boto3_client("bedrock", server.url), dest, "console-llama")
    yield ConsoleServer(
        server=server,
        model="console-llama",
        model_arn=str(job["importedModelArn"]),
        admin_key=TEST_API_KEY,
        _source=source,
    )
    server.stop()


@pytest.fixture(scope="module")
def make_key(console_server: ConsoleServer) -> Callable[..., str]:
    """``make_key(policy, model=None)`` -> the API key of a new principal with that built-in policy,
    or with ``policy`` itself when it is a policy document (a dict with a ``Statement`` list)."""

    def make(policy: str | dict[str, Any], model: str | None = None) -> str:
        if isinstance(policy, dict):
            if model is not None:
                raise ValueError(
                    "model= scopes a built-in invoke-only key; a policy document names its resources"
                )
            return _create_key({"name": f"custom-{uuid.uuid4().hex[:8]}", "policy": policy})
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r}: use one of {', '.join(POLICIES)}")
        body: dict[str, Any] = {"name": f"{policy}-{uuid.uuid4().hex[:8]}", "policy": policy}
        if model is not None:
            if policy != "invoke-only":
                raise ValueError("model= scopes an invoke-only key; the other policies cover every model")
            body["models"] = [model]
        return _create_key(body)

    def _create_key(body: dict[str, Any]) -> str:
        response = console_server.api("POST", "/outcrop/keys", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["apiKey"])

    return make


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(NO_CHROMIUM)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one test module; stopping it after the module ends its event loop, which would otherwise make every later asyncio test fail (the system's, not a Playwright download)."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(NO_PLAYWRIGHT)
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
        except Exception as exc:  # a chromium that cannot start here (missing libraries, no /dev/shm)
            pytest.skip(f"{executable} did not start under Playwright: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new page in its own context (fresh session storage), 1,400 px wide; closed after the test."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()
