"""Temporary browser fixtures for the console tests, written while c2-api builds tests/browser/conftest.py.

Same names and meaning as that conftest (the lead switches the test modules to it at merge and
deletes this file): ``console_server`` (a real ``outcrop serve`` process on loopback with one tiny
imported model, one per test module), ``make_key(policy, model=None)`` (a new API key with a
built-in policy, made through the keys API), ``page`` (a Playwright page on the system Chromium,
headless, skipped with the reason when there is no Chromium or no Playwright).
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, api, boto3_client, import_and_wait, server_env

__all__ = ["ConsoleServer", "_browser", "console_server", "make_key", "page"]


@dataclass
class ConsoleServer:
    server: ServerProcess
    model: str  # a tiny imported llama with a chat template
    import_root: Path  # inside the server's allowed roots

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_cache: Callable[..., Path]
) -> Iterator[ConsoleServer]:
    root = tmp_path_factory.mktemp("console-server")
    server = ServerProcess(data_dir=root / "data", env=server_env(root), import_root=root).start()
    try:
        shutil.copytree(tiny_model_cache(family="llama"), root / "tiny")
        import_and_wait(boto3_client("bedrock", server.url), root / "tiny", "tiny")
        yield ConsoleServer(server=server, model="tiny", import_root=root)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def make_key(console_server: ConsoleServer) -> Callable[..., str]:
    """``make_key("invoke-only", model=None)`` -> the API key of a new principal with that built-in policy."""
    counter = itertools.count()

    def make(policy: str, model: str | None = None) -> str:
        body: dict[str, Any] = {"name": f"{policy}-{next(counter)}", "policy": policy}
        if model is not None:
            body["models"] = [model]
        response = api.post(f"{console_server.url}/outcrop/keys", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["apiKey"])

    return make


@pytest.fixture(scope="module")
def _browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no system Chromium: install it with `apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'playwright>=1.50,<2'")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(_browser: Any) -> Iterator[Any]:
    context = _browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()
