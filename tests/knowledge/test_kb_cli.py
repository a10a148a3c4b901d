"""`outcrop kb` against a real server: create, add a folder, sync with a progress bar, retrieve, show, rm."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.test_cli import outcrop
from tests.conftest import ServerProcess
from tests.knowledge.kb_helpers import import_embedder, write_corpus

pytestmark = pytest.mark.e2e


def test_a_newcomer_creates_syncs_and_queries_a_knowledge_base_from_the_cli(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server()
    import_embedder(server, tmp_path, name="cli-embed")
    folder = tmp_path / "handbook"
    texts = write_corpus(folder, 5, seed=21)
    (folder / "broken.pdf").write_bytes(b"not a pdf at all")
    e = ("--endpoint", server.url)

    made = outcrop("kb", "create", "handbook", "--model", "cli-embed", *e)
    assert made.returncode == 0, made.stderr
    wrong = outcrop("kb", "add-source", "handbok", "docs", "--uri", str(folder), *e)
    assert wrong.returncode == 1 and "Did you mean 'handbook'" in wrong.stderr
    added = outcrop("kb", "add-source", "handbook", "docs", "--uri", str(folder), "--chunking", "none", *e)
    assert added.returncode == 0, added.stderr

    synced = outcrop("kb", "sync", "handbook", *e)
    assert synced.returncode == 0, synced.stderr
    assert "COMPLETE" in synced.stdout and "new 5" in synced.stdout and "failed 1" in synced.stdout
    assert "broken.pdf" in synced.stderr  # the failure reason, under the progress bar

    found = outcrop("kb", "retrieve", "handbook", texts["doc0002.txt"], "-n", "2", "--json", *e)
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    assert results[0]["content"]["text"] == texts["doc0002.txt"] and len(results) == 2
    filtered = outcrop(
        "kb",
        "retrieve",
        "handbook",
        "hello",
        "--filter",
        '{"equals": {"key": "genre", "value": "drama"}}',
        "--json",
        *e,
    )
    assert {r["metadata"]["genre"] for r in json.loads(filtered.stdout)} == {"drama"}
    bad_filter = outcrop("kb", "retrieve", "handbook", "hello", "--filter", "{nope", *e)
    assert bad_filter.returncode == 1 and "not valid JSON" in bad_filter.stderr

    shown = outcrop("kb", "show", "handbook", *e)
    assert shown.returncode == 0 and "docs" in shown.stdout and "COMPLETE" in shown.stdout
    listed = outcrop("kb", "--json", *e)
    assert [kb["name"] for kb in json.loads(listed.stdout)] == ["handbook"]
    removed = outcrop("kb", "rm", "handbook", "--yes", *e)
    assert removed.returncode == 0, removed.stderr
