"""docs/knowledge-bases.md cannot rot: its boto3 walk-through and its CLI commands run as written
against a real server (only the folder, the endpoint and the credentials are this test's)."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import outcrop
from tests.conftest import REPO, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, ServerProcess
from tests.knowledge.kb_helpers import import_embedder, sentence

pytestmark = pytest.mark.e2e

DOC = REPO / "docs" / "knowledge-bases.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def handbook(folder: Path) -> None:
    import random

    rng = random.Random(4)
    folder.mkdir()
    for i, team in enumerate(["security", "sales", "security", "support"]):
        (folder / f"page{i}.md").write_text(" ".join(sentence(rng) for _ in range(6)))
        (folder / f"page{i}.md.metadata.json").write_text(json.dumps({"metadataAttributes": {"team": team}}))


def test_the_boto3_walk_through_and_the_cli_commands_run_as_written(
    start_server: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server()
    import_embedder(server, tmp_path, name="minilm")  # the name the page imports its model as
    folder = tmp_path / "handbook"
    handbook(folder)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
    code = (
        blocks("python")[0]
        .replace("http://127.0.0.1:8080", server.url)
        .replace("file:///data/handbook", folder.as_uri())
    )
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert namespace["job"]["status"] == "COMPLETE"
    assert namespace["job"]["statistics"]["numberOfNewDocumentsIndexed"] == 4
    assert {r["metadata"]["team"] for r in namespace["results"]} == {"security"}
    agent = namespace["agent"]
    agent.delete_knowledge_base(knowledgeBaseId=namespace["kb_id"])  # the CLI walk-through reuses the name
    deadline = time.monotonic() + 30
    while any(s["name"] == "handbook" for s in agent.list_knowledge_bases()["knowledgeBaseSummaries"]):
        assert time.monotonic() < deadline, "the knowledge base was never deleted"
        time.sleep(0.1)

    cli = [line.split("#")[0].strip() for line in blocks("bash")[1].splitlines()]
    env = {**os.environ, "OUTCROP_ENDPOINT": server.url}
    for line in filter(None, cli):
        args = shlex.split(line.replace("/data/handbook", str(folder)))
        assert args[0] == "outcrop"
        done = outcrop(*args[1:], env=env)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
