"""``outcrop prompts``: list stored prompts, and export / import them as JSON files for review in git.

Self-contained (its own client, options and error edge, as ``outcrop endpoints``), and it goes
through the server's ``bedrock-agent`` API like any boto3 caller, so policies and the audit log
apply to it.

The export writes one file per prompt, ``<dir>/<name>.json``, with sorted keys and no ids or
timestamps, so a diff shows only what changed in the prompt::

    {"format": "outcrop-prompt/1", "name": ..., "description": ..., "defaultVariant": ...,
     "variants": [...],                      <- the DRAFT
     "versions": [{"version": "1", "name": ..., "variants": [...]}, ...]}

Import checks every file first (nothing is sent if one is malformed), then per prompt: a new name
is created with its versions cut in order; for a known name, file versions newer than the
server's are added, versions the server has are left as they are (versions are immutable; a
difference is reported), and the DRAFT becomes the file's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from outcrop.cli.client import Client
from outcrop.cli.options import DATA_DIR_OPTION, ENDPOINT_OPTION, fail, server_client
from outcrop.errors import InvalidRequestError, OutcropError
from outcrop.prompts.spec import PromptContent, check_content

FORMAT = "outcrop-prompt/1"
CONTENT_KEYS = ("name", "description", "customerEncryptionKeyArn", "defaultVariant", "variants")

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 4096)
err_console = Console(stderr=True, soft_wrap=True)

prompts_app = typer.Typer(
    help=(
        "List prompts (Prompt management), and export / import them as JSON files.\n\n"
        "Examples: `outcrop prompts`, `outcrop prompts export prompts/`, `outcrop prompts import prompts/`"
    ),
    no_args_is_help=False,
)

EndpointOpt = ENDPOINT_OPTION
DataDirOpt = DATA_DIR_OPTION


class PromptsApi:
    """The bedrock-agent Prompt management calls the commands make."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def summaries(self, prompt_id: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = None
        while True:
            params: dict[str, Any] = {"maxResults": 1000}
            if prompt_id:
                params["promptIdentifier"] = prompt_id
            if token:
                params["nextToken"] = token
            page = self.client._call("GET", "/prompts/", params=params)
            out += page["promptSummaries"]
            token = page.get("nextToken")
            if not token:
                return out

    def get(self, prompt_id: str, version: str | None = None) -> dict[str, Any]:
        params = {"promptVersion": version} if version else {}
        return dict(self.client._call("GET", f"/prompts/{prompt_id}/", params=params))

    def create(self, content: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client._call("POST", "/prompts/", json=content))

    def update(self, prompt_id: str, content: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client._call("PUT", f"/prompts/{prompt_id}/", json=content))

    def create_version(self, prompt_id: str, description: str | None) -> dict[str, Any]:
        body = {"description": description} if description else {}
        return dict(self.client._call("POST", f"/prompts/{prompt_id}/versions", json=body))


def _content(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: answer[k] for k in CONTENT_KEYS if answer.get(k) is not None}


def export_document(api: PromptsApi, prompt_id: str) -> dict[str, Any]:
    """One prompt as its export file holds it (the DRAFT, then every numbered version)."""
    document: dict[str, Any] = {"format": FORMAT, **_content(api.get(prompt_id))}
    versions = [s["version"] for s in api.summaries(prompt_id) if s["version"] != "DRAFT"]
    document["versions"] = [{"version": v, **_content(api.get(prompt_id, v))} for v in versions]
    return document


def _checked(content: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        check_content(PromptContent.model_validate(content))
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestError(f"{where}: '{at}' {first['msg']}.") from None
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{where}: {exc.message}") from None
    return content


def read_document(path: Path) -> dict[str, Any]:
    """An export file, checked (the DRAFT and each version as CreatePrompt would check it)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(f"{path}: cannot read it as JSON ({exc}).") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidRequestError(
            f'{path}: not an Outcrop prompt file (it must be a JSON object with "format": "{FORMAT}"; '
            "`outcrop prompts export` writes them)."
        )
    _checked({k: document[k] for k in CONTENT_KEYS if k in document}, str(path))
    versions = document.get("versions") or []
    if not isinstance(versions, list):
        raise InvalidRequestError(f"{path}: 'versions' must be a list.")
    numbers = []
    for i, version in enumerate(versions):
        where = f"{path} versions[{i}]"
        if not isinstance(version, dict) or not str(version.get("version", "")).isdigit():
            raise InvalidRequestError(f'{where}: each version is an object with "version": "<number>".')
        _checked({k: version[k] for k in CONTENT_KEYS if k in version}, where)
        numbers.append(int(version["version"]))
    if numbers != sorted(set(numbers)):
        raise InvalidRequestError(f"{path}: versions must be listed once each, in increasing order.")
    return document


def import_document(api: PromptsApi, document: dict[str, Any], known: dict[str, str]) -> str:
    """Bring one prompt to the file's state; returns what was done, in words."""
    draft = _content(document)
    name = draft["name"]
    versions = document.get("versions") or []
    prompt_id = known.get(name)
    done: list[str] = []
    if prompt_id is None:
        first = _content(versions[0]) if versions else draft
        prompt_id = str(api.create(first)["id"])
        done.append("created")
        have: dict[str, dict[str, Any]] = {}
    else:
        have = {
            s["version"]: _content(api.get(prompt_id, s["version"]))
            for s in api.summaries(prompt_id)
            if s["version"] != "DRAFT"
        }
    newest = max((int(v) for v in have), default=0)
    for version in versions:
        number = str(int(version["version"]))
        content = _content(version)
        if number in have:
            if have[number] != content:
                done.append(
                    f"version {number} differs on the server and was left as it is (versions are immutable)"
                )
            continue
        if int(number) <= newest:
            done.append(f"version {number} is not on the server (deleted there?) and was not recreated")
            continue
        api.update(prompt_id, content)
        made = api.create_version(prompt_id, content.get("description"))
        done.append(
            f"version {number} added" + (f" as {made['version']}" if made["version"] != number else "")
        )
    api.update(prompt_id, draft)
    done.append("DRAFT set")
    return f"{name} ({prompt_id}): " + "; ".join(done)


@prompts_app.callback(invoke_without_command=True)
def prompts_list(
    ctx: typer.Context,
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
    json_output: bool = typer.Option(False, "--json", help="Print the prompts as JSON, for scripts."),
) -> None:
    """List prompts: name, id, versions and the model each runs on.

    Examples:

        outcrop prompts

        outcrop prompts --json
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        api = PromptsApi(server_client(endpoint, data_dir))
        rows = []
        for summary in api.summaries():
            draft = api.get(summary["id"])
            versions = [s["version"] for s in api.summaries(summary["id"]) if s["version"] != "DRAFT"]
            variant = (draft.get("variants") or [{}])[0]
            rows.append(
                {
                    "name": draft["name"],
                    "id": draft["id"],
                    "arn": draft["arn"],
                    "versions": versions,
                    "templateType": variant.get("templateType"),
                    "modelId": variant.get("modelId"),
                    "updatedAt": draft["updatedAt"],
                }
            )
    except OutcropError as exc:
        fail(exc)
    if json_output:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        console.print(
            "No prompts yet. Create one with boto3 bedrock-agent create_prompt(...) or "
            "`outcrop prompts import DIR` (see docs/prompts.md)."
        )
        return
    table = Table("name", "id", "versions", "template", "model", "updated")
    for r in rows:
        table.add_row(
            r["name"],
            r["id"],
            ", ".join(r["versions"]) or "-",
            r["templateType"] or "-",
            r["modelId"] or "-",
            r["updatedAt"],
        )
    console.print(table)


@prompts_app.command("export")
def prompts_export(
    folder: Path = typer.Argument(..., help="Folder to write <name>.json files into (created if missing)."),
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Write every prompt (its DRAFT and versions) to FOLDER/NAME.json, for review in git.

    Example: outcrop prompts export prompts/
    """
    try:
        api = PromptsApi(server_client(endpoint, data_dir))
        folder.mkdir(parents=True, exist_ok=True)
        count = 0
        for summary in api.summaries():
            document = export_document(api, summary["id"])
            path = folder / f"{document['name']}.json"
            path.write_text(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
    except OutcropError as exc:
        fail(exc)
    except OSError as exc:
        fail(InvalidRequestError(f"Cannot write to {folder}: {exc}"))
    console.print(f"Exported {count} prompt{'s' if count != 1 else ''} to {folder}.")


@prompts_app.command("import")
def prompts_import(
    paths: list[Path] = typer.Argument(..., help="Prompt files, or folders of them (*.json)."),
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Create or update prompts from files that `outcrop prompts export` wrote.

    Every file is checked before anything is sent. A new prompt is created with its versions; a
    known one (same name) gets the versions it lacks, and its DRAFT becomes the file's.

    Example: outcrop prompts import prompts/
    """
    try:
        files = [f for p in paths for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
        documents = [read_document(f) for f in files]
        api = PromptsApi(server_client(endpoint, data_dir))
        known = {s["name"]: s["id"] for s in api.summaries()}
        for document in documents:
            console.print(escape(import_document(api, document, known)), highlight=False)
    except OutcropError as exc:
        fail(exc)
    if not files:
        console.print("No prompt files found.")
