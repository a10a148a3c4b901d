"""``outcrop kb``: knowledge bases from the command line (create, data sources, sync, retrieve).

Self-contained (its own client, options and error edge, as ``outcrop prompts``), and it goes
through the server's ``bedrock-agent`` / ``bedrock-agent-runtime`` API like any boto3 caller, so
policies and the audit log apply. A knowledge base or data source is named by its id or its name.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from outcrop.cli.client import Client, did_you_mean
from outcrop.cli.options import DATA_DIR_OPTION, ENDPOINT_OPTION, fail, server_client
from outcrop.envs import load_config
from outcrop.errors import InvalidRequestError, NotFoundError, OutcropError

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 4096)
err_console = Console(stderr=True, soft_wrap=True)

# How often `sync` asks for progress: smooth for a person, negligible for the server.
POLL_SECONDS = 0.5
TERMINAL = ("COMPLETE", "FAILED", "STOPPED")
DEFAULT_ROLE = "arn:aws:iam::{account}:role/outcrop-knowledge-base"

kb_app = typer.Typer(
    help=(
        "Knowledge bases: create one on an imported embedding model, add a folder (or bucket) of documents, "
        "sync it, and retrieve.\n\n"
        "Examples:\n\n"
        "  outcrop kb create docs --model my-embedder\n\n"
        "  outcrop kb add-source docs handbook --uri /data/handbook --chunking fixed:300:20\n\n"
        "  outcrop kb sync docs\n\n"
        "  outcrop kb retrieve docs 'how do I rotate a key?' -n 3\n\n"
        "  outcrop kb            (list)      outcrop kb show docs      outcrop kb rm docs --yes"
    ),
    invoke_without_command=True,
    no_args_is_help=False,
)

EndpointOpt = ENDPOINT_OPTION
DataDirOpt = DATA_DIR_OPTION
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")


class KnowledgeApi:
    """The bedrock-agent and bedrock-agent-runtime calls the commands make."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _pages(self, path: str, key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        body: dict[str, Any] = {"maxResults": 1000}
        while True:
            page = self.client._call("POST", path, json=body)
            out += page[key]
            if not page.get("nextToken"):
                return out
            body["nextToken"] = page["nextToken"]

    def knowledge_bases(self) -> list[dict[str, Any]]:
        return self._pages("/knowledgebases/", "knowledgeBaseSummaries")

    def kb(self, kb_id: str) -> dict[str, Any]:
        return dict(self.client._call("GET", f"/knowledgebases/{kb_id}")["knowledgeBase"])

    def kb_id(self, name_or_id: str) -> str:
        """A knowledge base's id from its id or name (NotFoundError with the closest names)."""
        summaries = self.knowledge_bases()
        for s in summaries:
            if name_or_id in (s["knowledgeBaseId"], s["name"]):
                return str(s["knowledgeBaseId"])
        names = [s["name"] for s in summaries]
        raise NotFoundError(
            "Knowledge base",
            name_or_id,
            (did_you_mean(name_or_id, names) + " `outcrop kb` lists them.").strip(),
        )

    def sources(self, kb_id: str) -> list[dict[str, Any]]:
        return self._pages(f"/knowledgebases/{kb_id}/datasources/", "dataSourceSummaries")

    def source(self, kb_id: str, ds_id: str) -> dict[str, Any]:
        return dict(self.client._call("GET", f"/knowledgebases/{kb_id}/datasources/{ds_id}")["dataSource"])

    def ds_id(self, kb_id: str, name_or_id: str) -> str:
        summaries = self.sources(kb_id)
        for s in summaries:
            if name_or_id in (s["dataSourceId"], s["name"]):
                return str(s["dataSourceId"])
        names = [s["name"] for s in summaries]
        raise NotFoundError(
            "Data source",
            name_or_id,
            (did_you_mean(name_or_id, names) + " `outcrop kb show` lists them.").strip(),
        )

    def jobs(self, kb_id: str, ds_id: str) -> list[dict[str, Any]]:
        return self._pages(
            f"/knowledgebases/{kb_id}/datasources/{ds_id}/ingestionjobs/", "ingestionJobSummaries"
        )

    def start(self, kb_id: str, ds_id: str) -> dict[str, Any]:
        path = f"/knowledgebases/{kb_id}/datasources/{ds_id}/ingestionjobs/"
        return dict(self.client._call("PUT", path, json={})["ingestionJob"])

    def job(self, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        path = f"/knowledgebases/{kb_id}/datasources/{ds_id}/ingestionjobs/{job_id}"
        return dict(self.client._call("GET", path)["ingestionJob"])


def _api(endpoint: str | None, data_dir: Path | None) -> KnowledgeApi:
    return KnowledgeApi(server_client(endpoint, data_dir))


@kb_app.callback()
def list_knowledge_bases(
    ctx: typer.Context,
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List knowledge bases (with no subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        rows = _api(endpoint, data_dir).knowledge_bases()
    except OutcropError as exc:
        fail(exc)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("ID", "NAME", "STATUS", "UPDATED", box=None)
    for r in rows:
        table.add_row(r["knowledgeBaseId"], r["name"], r["status"], r["updatedAt"])
    console.print(table)


@kb_app.command("create")
def create(
    name: str = typer.Argument(..., help="Name of the knowledge base (letters, digits, '-' and '_')."),
    model: str = typer.Option(..., "--model", "-m", help="The imported embedding model (name or ARN)."),
    description: str | None = typer.Option(None, "--description", help="A description (1-200 characters)."),
    dimensions: int | None = typer.Option(
        None, "--dimensions", help="Fewer dimensions (Matryoshka models only)."
    ),
    role_arn: str | None = typer.Option(None, "--role-arn", help="Kept as Bedrock does (not assumed)."),
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Create a knowledge base on an imported embedding model. Example: outcrop kb create docs --model my-embedder"""
    config = load_config(**({"data_dir": data_dir} if data_dir else {}))
    vector: dict[str, Any] = {"embeddingModelArn": model}
    if dimensions:
        vector["embeddingModelConfiguration"] = {
            "bedrockEmbeddingModelConfiguration": {"dimensions": dimensions}
        }
    body: dict[str, Any] = {
        "name": name,
        "roleArn": role_arn or DEFAULT_ROLE.format(account=config.aws.account_id),
        "knowledgeBaseConfiguration": {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": vector},
    }
    if description:
        body["description"] = description
    try:
        made = server_client(endpoint, data_dir)._call("PUT", "/knowledgebases/", json=body)["knowledgeBase"]
    except OutcropError as exc:
        fail(exc)
    console.print(f"created knowledge base {made['knowledgeBaseId']} ({made['name']}, {made['status']})")


def _chunking(spec: str) -> dict[str, Any]:
    """``fixed:300:20`` | ``none`` | ``hierarchical:1500:300:60`` | ``semantic:300:0:95`` -> ChunkingConfiguration."""
    parts = spec.lower().split(":")
    try:
        numbers = [int(p) for p in parts[1:]]
        if parts[0] == "none" and not numbers:
            return {"chunkingStrategy": "NONE"}
        if parts[0] == "fixed" and len(numbers) == 2:
            return {
                "chunkingStrategy": "FIXED_SIZE",
                "fixedSizeChunkingConfiguration": {"maxTokens": numbers[0], "overlapPercentage": numbers[1]},
            }
        if parts[0] == "hierarchical" and len(numbers) == 3:
            return {
                "chunkingStrategy": "HIERARCHICAL",
                "hierarchicalChunkingConfiguration": {
                    "levelConfigurations": [{"maxTokens": numbers[0]}, {"maxTokens": numbers[1]}],
                    "overlapTokens": numbers[2],
                },
            }
        if parts[0] == "semantic" and len(numbers) == 3:
            return {
                "chunkingStrategy": "SEMANTIC",
                "semanticChunkingConfiguration": {
                    "maxTokens": numbers[0],
                    "bufferSize": numbers[1],
                    "breakpointPercentileThreshold": numbers[2],
                },
            }
    except ValueError:
        pass
    raise InvalidRequestError(
        f"--chunking {spec!r} is not one of: fixed:<maxTokens>:<overlapPercent>, none, "
        "hierarchical:<parentTokens>:<childTokens>:<overlapTokens>, semantic:<maxTokens>:<bufferSize>:<percentile>.",
        param="--chunking",
    )


@kb_app.command("add-source")
def add_source(
    kb: str = typer.Argument(..., help="Knowledge base (id or name)."),
    name: str = typer.Argument(..., help="Name of the data source."),
    uri: str = typer.Option(
        ..., "--uri", help="A folder on the server (/data/docs or file:///data/docs) or s3://bucket/prefix."
    ),
    prefix: str | None = typer.Option(
        None, "--prefix", help="Only keys (relative paths) starting with this."
    ),
    chunking: str = typer.Option(
        "fixed:300:20",
        "--chunking",
        help="fixed:300:20 (default), none, hierarchical:1500:300:60, semantic:300:0:95.",
    ),
    retain: bool = typer.Option(False, "--retain", help="Keep its vectors when the data source is deleted."),
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Add a data source: a folder of documents (txt, md, html, csv, pdf, docx) or a bucket.
    Example: outcrop kb add-source docs handbook --uri /data/handbook"""
    try:
        config = _chunking(chunking)
        api = _api(endpoint, data_dir)
        kb_id = api.kb_id(kb)
        s3: dict[str, Any] = {"bucketArn": uri}
        if prefix:
            s3["inclusionPrefixes"] = [prefix]
        body = {
            "name": name,
            "dataSourceConfiguration": {"type": "S3", "s3Configuration": s3},
            "vectorIngestionConfiguration": {"chunkingConfiguration": config},
            "dataDeletionPolicy": "RETAIN" if retain else "DELETE",
        }
        made = api.client._call("PUT", f"/knowledgebases/{kb_id}/datasources/", json=body)["dataSource"]
    except OutcropError as exc:
        fail(exc)
    console.print(
        f"added data source {made['dataSourceId']} ({made['name']}) to {kb_id}; sync it: outcrop kb sync {kb}"
    )


@kb_app.command("show")
def show(
    kb: str = typer.Argument(..., help="Knowledge base (id or name)."),
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A knowledge base, its data sources and their last ingestion job. Example: outcrop kb show docs"""
    try:
        api = _api(endpoint, data_dir)
        kb_id = api.kb_id(kb)
        detail = api.kb(kb_id)
        sources = []
        for s in api.sources(kb_id):
            jobs = api.jobs(kb_id, s["dataSourceId"])
            sources.append(
                {**api.source(kb_id, s["dataSourceId"]), "lastIngestionJob": jobs[0] if jobs else None}
            )
    except OutcropError as exc:
        fail(exc)
    if as_json:
        console.print_json(json.dumps({**detail, "dataSources": sources}))
        return
    model = detail["knowledgeBaseConfiguration"]["vectorKnowledgeBaseConfiguration"]["embeddingModelArn"]
    console.print(f"[bold]{detail['name']}[/] {detail['knowledgeBaseId']}  {detail['status']}")
    console.print(f"  arn:   {detail['knowledgeBaseArn']}\n  model: {model}")
    table = Table("DATA SOURCE", "NAME", "URI", "LAST SYNC", "INDEXED", "FAILED", box=None)
    for s in sources:
        job = s["lastIngestionJob"] or {}
        stats = job.get("statistics", {})
        indexed = stats.get("numberOfNewDocumentsIndexed", 0) + stats.get(
            "numberOfModifiedDocumentsIndexed", 0
        )
        table.add_row(
            s["dataSourceId"],
            s["name"],
            s["dataSourceConfiguration"]["s3Configuration"]["bucketArn"],
            f"{job.get('status', '-')} {job.get('startedAt', '')}".strip(),
            str(indexed) if job else "-",
            str(stats.get("numberOfDocumentsFailed", 0)) if job else "-",
        )
    console.print(table)


@kb_app.command("rm")
def remove(
    kb: str = typer.Argument(..., help="Knowledge base (id or name)."),
    source: str | None = typer.Option(None, "--source", help="Delete only this data source (id or name)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Delete a knowledge base (with its data sources and vectors), or one data source.
    Example: outcrop kb rm docs --yes"""
    try:
        api = _api(endpoint, data_dir)
        kb_id = api.kb_id(kb)
        what = f"data source {source} of {kb}" if source else f"knowledge base {kb} and all its vectors"
        if not yes and not typer.confirm(f"Delete {what}?", default=False):
            raise typer.Exit(1)
        if source:
            ds_id = api.ds_id(kb_id, source)
            api.client._call("DELETE", f"/knowledgebases/{kb_id}/datasources/{ds_id}")
        else:
            api.client._call("DELETE", f"/knowledgebases/{kb_id}")
    except OutcropError as exc:
        fail(exc)
    console.print(f"deleting {what}")


def _follow(api: KnowledgeApi, kb_id: str, ds: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """A progress bar over the documents of one ingestion job, until it ends."""
    columns = [
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("documents  {task.fields[failed]} failed"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(f"{ds['name']}: {job['status']}", total=None, failed=0)
        while True:
            stats = job.get("statistics", {})
            done = sum(
                stats.get(k, 0)
                for k in (
                    "numberOfNewDocumentsIndexed",
                    "numberOfModifiedDocumentsIndexed",
                    "numberOfMetadataDocumentsModified",
                    "numberOfDocumentsFailed",
                )
            )
            total = stats.get("numberOfDocumentsScanned") or None
            if job["status"] in TERMINAL and total:
                done = total  # unchanged documents are not counted by any statistic
            progress.update(
                task,
                description=f"{ds['name']}: {job['status']}",
                completed=done,
                total=total,
                failed=stats.get("numberOfDocumentsFailed", 0),
            )
            if job["status"] in TERMINAL:
                return job
            time.sleep(POLL_SECONDS)
            job = api.job(kb_id, ds["dataSourceId"], job["ingestionJobId"])


@kb_app.command("sync")
def sync(
    kb: str = typer.Argument(..., help="Knowledge base (id or name)."),
    source: str | None = typer.Option(
        None, "--source", help="Only this data source (id or name); default: all."
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Follow each job with a progress bar until it ends."
    ),
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Start an ingestion job per data source (only new, changed and deleted documents are processed)
    and follow it. Example: outcrop kb sync docs"""
    failed = False
    try:
        api = _api(endpoint, data_dir)
        kb_id = api.kb_id(kb)
        sources = api.sources(kb_id)
        if source:
            wanted = api.ds_id(kb_id, source)
            sources = [s for s in sources if s["dataSourceId"] == wanted]
        if not sources:
            raise InvalidRequestError(
                f"Knowledge base {kb} has no data sources; add one with `outcrop kb add-source`."
            )
        for ds in sources:
            job = api.start(kb_id, ds["dataSourceId"])
            if not wait:
                console.print(f"started ingestion job {job['ingestionJobId']} for {ds['name']}")
                continue
            job = _follow(api, kb_id, ds, job)
            stats = job.get("statistics", {})
            console.print(
                f"{ds['name']}: {job['status']}  scanned {stats.get('numberOfDocumentsScanned', 0)}, "
                f"new {stats.get('numberOfNewDocumentsIndexed', 0)}, "
                f"modified {stats.get('numberOfModifiedDocumentsIndexed', 0)}, "
                f"metadata {stats.get('numberOfMetadataDocumentsModified', 0)}, "
                f"deleted {stats.get('numberOfDocumentsDeleted', 0)}, "
                f"failed {stats.get('numberOfDocumentsFailed', 0)}"
            )
            for reason in job.get("failureReasons", [])[:20]:
                err_console.print("  [yellow]" + escape(reason) + "[/]", highlight=False)
            failed = failed or job["status"] == "FAILED"
    except OutcropError as exc:
        fail(exc)
    if failed:
        raise typer.Exit(1)


@kb_app.command("retrieve")
def retrieve(
    kb: str = typer.Argument(..., help="Knowledge base (id or name)."),
    query: str = typer.Argument(..., help="What to search for."),
    number: int = typer.Option(5, "--number", "-n", min=1, max=100, help="How many results."),
    search: str | None = typer.Option(None, "--search", help="hybrid or semantic (default: semantic)."),
    filter_json: str | None = typer.Option(
        None,
        "--filter",
        help='A RetrievalFilter as JSON, e.g. \'{"equals": {"key": "genre", "value": "drama"}}\'.',
    ),
    endpoint: str | None = EndpointOpt,
    data_dir: Path | None = DataDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Search a knowledge base (Retrieve). Example: outcrop kb retrieve docs 'how do I rotate a key?' -n 3"""
    try:
        search_config: dict[str, Any] = {"numberOfResults": number}
        if search:
            search_config["overrideSearchType"] = search.upper()
        if filter_json:
            try:
                search_config["filter"] = json.loads(filter_json)
            except ValueError as exc:
                raise InvalidRequestError(f"--filter is not valid JSON: {exc}", param="--filter") from None
        api = _api(endpoint, data_dir)
        kb_id = api.kb_id(kb)
        body = {
            "retrievalQuery": {"text": query},
            "retrievalConfiguration": {"vectorSearchConfiguration": search_config},
        }
        results = api.client._call("POST", f"/knowledgebases/{kb_id}/retrieve", json=body)["retrievalResults"]
    except OutcropError as exc:
        fail(exc)
    if as_json:
        console.print_json(json.dumps(results))
        return
    for i, r in enumerate(results, 1):
        uri = r.get("location", {}).get("s3Location", {}).get("uri", "")
        console.print(f"[bold]{i}.[/] {r['score']:.3f}  [cyan]{escape(uri)}[/]")
        console.print("   " + escape(r["content"]["text"][:400].replace("\n", " ")), highlight=False)
