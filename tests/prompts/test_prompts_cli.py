"""`outcrop prompts`, `outcrop prompts export` and `outcrop prompts import` (a real server and CLI process)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.test_cli import outcrop
from tests.conftest import ServerProcess, boto3_client
from tests.prompts.builders import chat_variant, prompt_request, text_variant

pytestmark = pytest.mark.e2e


def test_export_then_import_into_a_fresh_server_restores_drafts_and_versions(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    source = start_server(data_dir=tmp_path / "a")
    agent = boto3_client("bedrock-agent", source.url)
    pid = agent.create_prompt(**prompt_request())["id"]
    agent.create_prompt_version(promptIdentifier=pid, description="first")
    agent.update_prompt(promptIdentifier=pid, **prompt_request(variants=[chat_variant()]))
    agent.create_prompt(**prompt_request(name="plain", variants=[text_variant(text="Hi", variables=())]))

    listed = outcrop("prompts", "--json", "--endpoint", source.url)
    assert listed.returncode == 0, listed.stderr
    assert {(r["name"], tuple(r["versions"])) for r in json.loads(listed.stdout)} == {
        ("explain", ("1",)),
        ("plain", ()),
    }
    table = outcrop("prompts", "--endpoint", source.url)
    assert "explain" in table.stdout and "CHAT" in table.stdout

    folder = tmp_path / "prompts"
    exported = outcrop("prompts", "export", str(folder), "--endpoint", source.url)
    assert exported.returncode == 0, exported.stderr
    document = json.loads((folder / "explain.json").read_text())
    assert document["variants"][0]["templateType"] == "CHAT"
    assert [
        (v["version"], v["description"], v["variants"][0]["templateType"]) for v in document["versions"]
    ] == [("1", "first", "TEXT")]
    assert "createdAt" not in (folder / "explain.json").read_text()  # stable diffs

    target = start_server(data_dir=tmp_path / "b")
    imported = outcrop("prompts", "import", str(folder), "--endpoint", target.url)
    assert imported.returncode == 0, imported.stderr
    other = boto3_client("bedrock-agent", target.url)
    ids = {s["name"]: s["id"] for s in other.list_prompts()["promptSummaries"]}
    assert other.get_prompt(promptIdentifier=ids["explain"])["variants"][0]["templateType"] == "CHAT"
    v1 = other.get_prompt(promptIdentifier=ids["explain"], promptVersion="1")
    assert v1["description"] == "first" and v1["variants"][0]["templateType"] == "TEXT"

    # A reviewed change: a new version and a new DRAFT text; importing again adds only what is new.
    document["versions"].append(
        {**{k: v for k, v in document.items() if k not in ("versions", "format")}, "version": "2"}
    )
    document["variants"][0]["templateConfiguration"]["chat"]["system"] = [{"text": "Be brief."}]
    (folder / "explain.json").write_text(json.dumps(document))
    again = outcrop("prompts", "import", str(folder / "explain.json"), "--endpoint", target.url)
    assert again.returncode == 0, again.stderr
    assert "version 2 added" in again.stdout
    versions = [s["version"] for s in other.list_prompts(promptIdentifier=ids["explain"])["promptSummaries"]]
    assert versions == ["DRAFT", "1", "2"]
    draft = other.get_prompt(promptIdentifier=ids["explain"])
    assert draft["variants"][0]["templateConfiguration"]["chat"]["system"] == [{"text": "Be brief."}]


def test_a_bad_file_is_one_red_line_and_nothing_is_imported(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server()
    folder = tmp_path / "prompts"
    folder.mkdir()
    good = {"format": "outcrop-prompt/1", **prompt_request(name="good"), "versions": []}
    (folder / "a.json").write_text(json.dumps(good))
    bad = {"format": "outcrop-prompt/1", **prompt_request(name="bad", variants=[text_variant(variables=())])}
    (folder / "b.json").write_text(json.dumps(bad))
    result = outcrop("prompts", "import", str(folder), "--endpoint", server.url)
    assert result.returncode == 1
    assert "b.json" in result.stderr and "does not declare topic" in result.stderr
    assert "Traceback" not in result.stderr
    assert boto3_client("bedrock-agent", server.url).list_prompts()["promptSummaries"] == []
