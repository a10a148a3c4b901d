"""The console's Knowledge bases view in a real Chromium: the knowledge bases a key may list, their
data sources with the latest sync's progress, statistics and failure reasons, and Sync offered
only to keys whose policy allows StartIngestionJob."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ConsoleServer
from tests.browser.test_console_views import DENIED, sign_in
from tests.conftest import TEST_API_KEY, boto3_client
from tests.knowledge.kb_helpers import create_ds, create_kb, import_embedder, write_corpus

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
expect: Any = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def corpus(console_server: ConsoleServer) -> Path:
    """Three documents that ingest and one that cannot be parsed, inside the allowed roots."""
    folder = console_server.import_root / "kb-docs"
    write_corpus(folder, 3)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n%%EOF")
    return folder


def test_an_admin_syncs_a_data_source_and_sees_its_progress_statistics_and_failures(
    page: Any, console_server: ConsoleServer, corpus: Path
) -> None:
    problems = sign_in(page, console_server, TEST_API_KEY, "knowledge")
    expect(page.locator("#kb-list")).to_contain_text("No knowledge bases yet")  # says how to make one

    agent = boto3_client("bedrock-agent", console_server.url)
    embedder = import_embedder(console_server.server, console_server.import_root, name="console-embed")
    kb_id = create_kb(agent, embedder, name="handbook")
    create_ds(agent, kb_id, corpus, name="manuals")
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("link", name="Knowledge bases").click()
    box = page.locator("#kb-list section", has_text="handbook")
    expect(box).to_contain_text("console-embed")  # the embedding model, by name
    expect(box).to_contain_text("never synced")

    box.get_by_role("button", name="Sync manuals").click()
    expect(page.locator("#kb-result")).to_contain_text("Syncing manuals")
    expect(box.locator("tbody tr")).to_contain_text("COMPLETE", timeout=120_000)  # followed as it runs
    expect(box.locator("tbody tr")).to_contain_text("4 scanned · 3 new · 0 modified · 0 deleted · 1 failed")
    expect(box.locator(".reasons li")).to_contain_text(re.compile("broken.pdf"))
    expect(box.get_by_role("button", name="Sync manuals")).to_be_visible()  # offered again once done
    assert problems == []


def test_a_read_only_key_sees_the_knowledge_bases_but_no_sync_and_an_invoke_only_key_sees_none(
    page: Any, console_server: ConsoleServer, corpus: Path, make_key: Callable[..., str]
) -> None:
    agent = boto3_client("bedrock-agent", console_server.url)
    if not agent.list_knowledge_bases()["knowledgeBaseSummaries"]:  # when run on its own
        embedder = import_embedder(console_server.server, console_server.import_root, name="console-embed")
        create_ds(agent, create_kb(agent, embedder, name="handbook"), corpus, name="manuals")

    problems = sign_in(page, console_server, make_key("read-only"), "knowledge")
    box = page.locator("#kb-list section", has_text="handbook")
    expect(box.locator("tbody tr")).to_contain_text("manuals")
    expect(page.locator("#kb-list button")).to_have_count(0)  # neither Sync nor Stop
    assert problems == []

    page.get_by_role("button", name="Sign out").click()
    page.goto(console_server.console_url(make_key("invoke-only", model=console_server.model)))
    page.goto(f"{console_server.url}/console#knowledge")
    expect(page.locator("#kb-list")).to_contain_text(DENIED)
