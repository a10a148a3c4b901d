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


def handbook(console_server: ConsoleServer, corpus: Path) -> dict[str, Any]:
    """The knowledge base "handbook" (made with its data source "manuals" when a test runs on its own)."""
    agent = boto3_client("bedrock-agent", console_server.url)
    found = [k for k in agent.list_knowledge_bases()["knowledgeBaseSummaries"] if k["name"] == "handbook"]
    if found:
        kb_id = found[0]["knowledgeBaseId"]
    else:
        embedder = import_embedder(console_server.server, console_server.import_root, name="console-embed")
        kb_id = create_kb(agent, embedder, name="handbook")
        create_ds(agent, kb_id, corpus, name="manuals")
    return dict(agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"])


def test_a_read_only_key_sees_the_knowledge_bases_but_no_sync_and_an_invoke_only_key_sees_none(
    page: Any, console_server: ConsoleServer, corpus: Path, make_key: Callable[..., str]
) -> None:
    handbook(console_server, corpus)
    problems = sign_in(page, console_server, make_key("read-only"), "knowledge")
    box = page.locator("#kb-list section", has_text="handbook")
    expect(box.locator("tbody tr")).to_contain_text("manuals")
    expect(page.locator("#kb-list button")).to_have_count(0)  # neither Sync nor Stop
    assert problems == []

    page.get_by_role("button", name="Sign out").click()
    page.goto(console_server.console_url(make_key("invoke-only", model=console_server.model)))
    page.goto(f"{console_server.url}/console#knowledge")
    expect(page.locator("#kb-list")).to_contain_text(DENIED)


@pytest.mark.parametrize(("scope", "offered"), [("this", 1), ("another", 0)])
def test_sync_is_offered_to_a_key_allowed_to_sync_that_knowledge_base(
    page: Any,
    console_server: ConsoleServer,
    corpus: Path,
    make_key: Callable[..., str],
    scope: str,
    offered: int,
) -> None:
    """The policy is checked on the knowledge base's ARN, as the server checks it."""
    arn = handbook(console_server, corpus)["knowledgeBaseArn"]
    if scope == "another":
        arn = arn.rsplit("/", 1)[0] + "/OTHERKB000"
    key = make_key(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["bedrock:List*", "bedrock:Get*"], "Resource": "*"},
                {"Effect": "Allow", "Action": "bedrock:StartIngestionJob", "Resource": arn},
            ],
        }
    )
    problems = sign_in(page, console_server, key, "knowledge")
    box = page.locator("#kb-list section", has_text="handbook")
    expect(box.locator("tbody tr")).to_contain_text("manuals")
    expect(box.get_by_role("button", name="Sync manuals")).to_have_count(offered)
    assert problems == []
