"""The ``outcrop`` command line.

The shared options, the run's state (``CliState``, in the click context) and the one error
edge (``OutcropGroup``: an ``OutcropError`` becomes a one-line red message, no stack trace)
live in ``outcrop/cli/options.py``; ``batch`` and ``bench`` have their own modules.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from outcrop import __version__
from outcrop.auth.bootstrap import read_credentials
from outcrop.cli.batch import batch_app
from outcrop.cli.bench import bench_command
from outcrop.cli.client import Client
from outcrop.cli.endpoints import endpoints_app
from outcrop.cli.kb import kb_app
from outcrop.cli.options import (
    CliState,
    OutcropGroup,
    YesOpt,
    check_name_option,
    console,
    err_console,
    new_table,
    shared_options,
)
from outcrop.cli.prompts import prompts_app
from outcrop.cli.running import announce, withdraw
from outcrop.config import OutcropConfig
from outcrop.envs import load_config
from outcrop.errors import InvalidRequestError
from outcrop.store.datadir import PRIVATE_UMASK, make_private

app = typer.Typer(
    name="outcrop",
    cls=OutcropGroup,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="List, inspect and delete imported models.", no_args_is_help=False)
jobs_app = typer.Typer(help="List and inspect model import jobs.", no_args_is_help=False)
keys_app = typer.Typer(
    help=(
        "Manage principals and their keys (SigV4 access keys and bearer API keys).\n\n"
        "Examples: `outcrop keys create app --policy invoke-only --model my-llama`, `outcrop keys ls`, "
        "`outcrop keys rotate app`, `outcrop keys rm app --yes`"
    ),
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
app.add_typer(jobs_app, name="jobs")
app.add_typer(batch_app, name="batch")
app.add_typer(keys_app, name="keys")
app.add_typer(endpoints_app, name="endpoints")  # outcrop/cli/endpoints.py
app.add_typer(prompts_app, name="prompts")  # outcrop/cli/prompts.py
app.add_typer(kb_app, name="kb")  # outcrop/cli/kb.py


@keys_app.callback()
@shared_options(endpoint=True)
def keys_options() -> None:
    # The shared options are accepted here too: `outcrop keys --endpoint URL ls`.
    pass


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@app.callback()
@shared_options(endpoint=True)
def main_options() -> None:
    """Outcrop: import fine-tuned LLMs and serve them behind Bedrock and OpenAI APIs.

    Examples:

        outcrop serve

        outcrop import ./my-llama --name my-llama

        outcrop models show my-llama

        outcrop demo --exit

        outcrop --json models | jq -r '.[].modelArn'
    """


@app.command()
def version() -> None:
    """Print Outcrop's version."""
    console.print(__version__)


@app.command()
@shared_options
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1: loopback only)."),
    port: int | None = typer.Option(None, help="Port (default 8080; 0 picks a free one)."),
    log_json: bool = typer.Option(False, "--log-json", help="Log one JSON object per line."),
    log_level: str | None = typer.Option(None, help="debug, info, warning or error."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate file: serve HTTPS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert."),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="Accept requests without credentials. Local experiments only."
    ),
) -> None:
    """Start the Outcrop server: Bedrock control plane, admin API, /health and /metrics on one port.

    Examples:

        outcrop serve

        outcrop serve --port 9000 --log-json

        OUTCROP_DATABASE_URL=postgresql+psycopg://outcrop@db/outcrop outcrop serve --host 0.0.0.0
    """
    import uvicorn

    from outcrop.api.app import create_app
    from outcrop.api.transport import guarded_http_protocol
    from outcrop.logs import setup_logging

    overrides = CliState.of(ctx).overrides()
    for key, value in {
        "server.host": host,
        "server.port": port,
        "server.log_json": log_json or None,
        "server.log_level": log_level,
    }.items():
        if value is not None:
            overrides[key] = value
    if insecure_no_auth:
        overrides["auth.enabled"] = False
    if tls_cert is not None or tls_key is not None:
        overrides["server.tls_cert_file"] = tls_cert
        overrides["server.tls_key_file"] = tls_key
    config: OutcropConfig = load_config(**overrides)
    setup_logging(config.server.log_level, config.server.log_json)
    loopback = is_loopback(config.server.host)
    if not config.auth.enabled:
        if not loopback:
            _refuse(
                f"Refusing to serve {config.server.host} without credentials: anyone on the "
                "network could use and delete your models. Drop --insecure-no-auth or bind 127.0.0.1."
            )
        err_console.print(
            "[bold yellow]WARNING: authentication is OFF (--insecure-no-auth): any local process "
            "can call every API. Do not use this outside local experiments.[/]"
        )
    tls = config.server.tls_cert_file, config.server.tls_key_file
    if (tls[0] is None) != (tls[1] is None):
        _refuse("HTTPS needs both --tls-cert and --tls-key.")
    _check_port_free(config.server.host, config.server.port)
    # Private data: files this process (and the copies it starts) creates are 0600, folders 0700.
    os.umask(PRIVATE_UMASK)
    make_private(config.resolved_data_dir)
    application = create_app(config)
    scheme = "https" if tls[0] else "http"
    url = f"{scheme}://{config.server.host}:{config.server.port}"
    err_console.print(
        f"[bold green]Outcrop {__version__}[/] serving on {url} "
        f"(data: {config.resolved_data_dir}, store: {application.state.services.db.engine.url.get_backend_name()})",
        highlight=False,
    )
    if config.server.port:
        err_console.print(_console_line(config, url, application.state.services.keys), highlight=False)
    record = announce(config.resolved_data_dir, url)
    try:
        uvicorn.run(
            application,
            host=config.server.host,
            port=config.server.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
            http=guarded_http_protocol(
                config.server.header_timeout_seconds, config.server.body_idle_timeout_seconds
            ),
            ssl_certfile=str(tls[0]) if tls[0] else None,
            ssl_keyfile=str(tls[1]) if tls[1] else None,
        )
    finally:
        withdraw(record)


def _console_line(config: OutcropConfig, url: str, keys: Any) -> str:
    """Where the console is; in a terminal on loopback, a ready sign-in link with the admin's key in its #fragment.

    A fragment never leaves the browser (it is not part of the request), and the page moves the
    key into the tab's sessionStorage at once. The key is printed only to a person: not when
    stderr is a file or a pipe (a log, which travels and is kept), nor off loopback.
    """
    page = f"{url}/console"
    if not config.auth.enabled:
        return f"Console: {page}"
    api_key = (read_credentials(config) or {}).get("api_key")
    to_a_person = sys.stderr.isatty() and is_loopback(config.server.host)
    if not to_a_person or not api_key or keys is None or keys.by_api_key(api_key) is None:
        return f"Console: {page} (sign in with an API key: the admin's is in {config.credentials_path})"
    return f"Console (signed in as admin; the key after # stays in your browser): {page}#key={api_key}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (parsed, so '127.evil.example' is not one)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refuse(message: str) -> None:
    raise InvalidRequestError(message)


def _confirm(question: str, yes: bool) -> None:
    """Ask before deleting; with no terminal to ask on, refuse unless --yes was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidRequestError(f"{question[:-1]}: nobody can confirm (no terminal); add --yes.")
    if not typer.confirm(question):
        raise typer.Exit(1)


def _check_port_free(host: str, port: int) -> None:
    """Fail before announcing anything when the address is taken (uvicorn would fail only after start-up)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            _refuse(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Another server (perhaps another "
                "outcrop serve) uses it: stop it, or pick another port with --port (0 picks a free one)."
            )


def _wait_for_import(client: Client, job_arn: str, *, quiet: bool = False) -> dict[str, Any]:
    """Follow a job with a progress bar until it ends; returns its last detail."""
    job_id = job_arn.rsplit("/", 1)[-1]
    columns = [
        TextColumn("[bold]{task.description:<11}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False, disable=quiet) as progress:
        task = progress.add_task("queued", total=None)
        while True:
            detail = client.import_job_detail(job_id)
            total = detail["bytesTotal"] or None
            progress.update(task, description=detail["phase"], completed=detail["bytesDone"], total=total)
            if detail["status"] != "InProgress":
                if detail["status"] == "Completed" and total:
                    progress.update(task, completed=total)
                return detail
            time.sleep(0.2)


@app.command("import")
@shared_options(endpoint=True)
def import_model(
    ctx: typer.Context,
    source: str = typer.Argument(
        ..., help="Model folder: a local path (read by the server), file:// or s3:// URI."
    ),
    name: str = typer.Option(
        ..., "--name", "-n", help="Name of the imported model (letters, digits, '-', '_')."
    ),
    job_name: str | None = typer.Option(
        None, "--job-name", help="Import job name (default: NAME-import-TIMESTAMP)."
    ),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="Return once the job is created; do not follow it."
    ),
) -> None:
    """Import a Hugging Face safetensors folder as a model; shows progress and waits for the verdict.

    Examples:

        outcrop import ./my-finetuned-llama --name my-llama

        outcrop import s3://models/llama-ft/ --name llama-ft --no-wait
    """
    check_name_option(name, "--name")
    if job_name is not None:
        check_name_option(job_name, "--job-name", job=True)
    cli = CliState.of(ctx)
    client = cli.client()
    uri = source if "://" in source else str(Path(source).expanduser().resolve())
    # name[:40]: the default job name stays within the 63 characters a job name may have.
    default_job = f"{name[:40].rstrip('-_')}-import-{time.strftime('%Y%m%d%H%M%S')}".replace("_", "-")
    body = {
        "jobName": job_name or default_job,
        "importedModelName": name,
        "modelDataSource": {"s3DataSource": {"s3Uri": uri}},
    }
    job_arn = client.create_import_job(**body)
    err_console.print(f"Import job [bold]{body['jobName']}[/] created: {job_arn}")
    if no_wait:
        console.print(job_arn)
        return
    detail = _wait_for_import(client, job_arn)
    if detail["status"] == "Failed":
        err_console.print(f"[bold red]Import failed:[/] {detail['failureMessage']}", highlight=False)
        raise typer.Exit(1)
    model = client.model_detail(name)
    _print_model(cli, model)


def _print_model(cli: CliState, model: dict[str, Any]) -> None:
    if cli.emit_json(model):
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("name", model["modelName"]),
        ("arn", model["modelArn"]),
        ("architecture", f"{model['architecture']} ({model['modelType']})"),
        ("parameters", f"{model['parameterCount']:,}"),
        ("dtype", model["dtype"]),
        ("context length", f"{model['contextLength']:,} tokens"),
        ("size", _human_bytes(model["sizeBytes"])),
        ("memory per copy", f"~{_human_bytes(model['memoryEstimateBytes'])}"),
        ("chat (instruct)", "yes" if model["instructSupported"] else "no (no chat template)"),
        ("created", model["creationTime"]),
        ("files", str(len(model["files"]))),
    ]
    if model.get("scaling"):
        rows.append(("scaling", _scaling_text(model["scaling"])))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@models_app.callback(invoke_without_command=True)
@shared_options(endpoint=True)
def models_list(ctx: typer.Context) -> None:
    """List imported models (`outcrop models`), or use a subcommand.

    Examples:

        outcrop models

        outcrop models show my-llama

        outcrop models rm my-llama --yes

        outcrop models scaling my-llama --min 1 --max 2
    """
    if ctx.invoked_subcommand is not None:
        return
    cli = CliState.of(ctx)
    client = cli.client()
    models = client.list_models()
    if cli.emit_json(models):
        return
    if not models:
        console.print("No imported models yet. Import one with `outcrop import PATH --name NAME`.")
        return
    table = new_table("name", "architecture", "chat", "created", "arn")
    for m in models:
        table.add_row(
            m["modelName"],
            m.get("modelArchitecture", ""),
            "yes" if m.get("instructSupported") else "no",
            m["creationTime"],
            m["modelArn"],
        )
    console.print(table)


@models_app.command("show")
@shared_options(endpoint=True)
def models_show(ctx: typer.Context, name: str = typer.Argument(..., help="Model name or ARN.")) -> None:
    """Show everything recorded about an imported model.

    Example: outcrop models show my-llama
    """
    cli = CliState.of(ctx)
    client = cli.client()
    _print_model(cli, client.model_detail(name))


def _scaling_text(scaling: dict[str, Any]) -> str:
    """'0-2 copies (set with `outcrop models scaling`), 1 running; scales to zero after 300 s idle (in 120 s)'."""
    source = " (set through the API)" if scaling.get("source") == "api" else " (from the configuration)"
    text = f"{scaling['minCopies']}-{scaling['maxCopies']} copies{source}, {scaling.get('liveCopies', 0)} running"
    if scaling.get("scaleToZeroSeconds") is None:
        return text + "; kept warm (never scales to zero)"
    text += f"; scales to zero after {scaling['scaleToZeroSeconds']:g} s idle"
    if scaling.get("scaleToZeroInSeconds") is not None:
        text += f" (in {scaling['scaleToZeroInSeconds']:.0f} s unless a request comes)"
    return text


@models_app.command("scaling")
@shared_options(endpoint=True)
def models_scaling(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name or ARN."),
    min_copies: int | None = typer.Option(
        None, "--min", help="Copies kept running even when idle (0 = scale to zero).", show_default=False
    ),
    max_copies: int | None = typer.Option(
        None, "--max", help="Most copies the autoscaler runs.", show_default=False
    ),
) -> None:
    """Show or set how many copies of a model run: kept on the server, across restarts.

    Examples:

        outcrop models scaling my-llama

        outcrop models scaling my-llama --min 1 --max 2

        outcrop models scaling my-llama --min 0
    """
    cli = CliState.of(ctx)
    client = cli.client()
    detail = client.model_detail(name)
    if min_copies is not None or max_copies is not None:
        current = detail["scaling"]
        wanted_min = current["minCopies"] if min_copies is None else min_copies
        wanted_max = current["maxCopies"] if max_copies is None else max_copies
        if max_copies is None and wanted_min > wanted_max:
            wanted_max = wanted_min  # --min alone above today's max raises it, as the config does
        detail = client.set_scaling(name, wanted_min, wanted_max)
    if cli.emit_json(detail["scaling"]):
        return
    console.print(f"{detail['modelName']}: {_scaling_text(detail['scaling'])}", highlight=False)


@models_app.command("rm")
@shared_options(endpoint=True)
def models_rm(
    ctx: typer.Context, name: str = typer.Argument(..., help="Model name or ARN."), yes: bool = YesOpt
) -> None:
    """Delete an imported model (its stored files go too, unless another model shares them).

    Example: outcrop models rm my-llama --yes
    """
    cli = CliState.of(ctx)
    client = cli.client()
    _confirm(f"Delete model {name}?", yes)
    client.delete_model(name)
    console.print(f"Deleted {name}.")


@jobs_app.callback(invoke_without_command=True)
@shared_options(endpoint=True)
def jobs_list(ctx: typer.Context) -> None:
    """List model import jobs, newest first (`outcrop jobs`), or use a subcommand.

    Example: outcrop jobs show my-llama-import-20260101120000
    """
    if ctx.invoked_subcommand is not None:
        return
    cli = CliState.of(ctx)
    client = cli.client()
    jobs = client.list_import_jobs()
    if cli.emit_json(jobs):
        return
    if not jobs:
        err_console.print("No import jobs yet. Import a model folder with `outcrop import PATH --name NAME`.")
        return
    table = new_table("job", "status", "model", "created", "ended")
    for j in jobs:
        style = {"Completed": "green", "Failed": "red"}.get(j["status"], "yellow")
        table.add_row(
            j["jobName"],
            f"[{style}]{j['status']}[/]",
            j.get("importedModelName", ""),
            j["creationTime"],
            j.get("endTime", ""),
        )
    console.print(table)


@jobs_app.command("show")
@shared_options(endpoint=True)
def jobs_show(ctx: typer.Context, name: str = typer.Argument(..., help="Job name or ARN.")) -> None:
    """Show an import job: status, phase, bytes copied and the failure reason if any.

    Example: outcrop jobs show my-llama-import-20260101120000
    """
    cli = CliState.of(ctx)
    client = cli.client()
    d = client.import_job_detail(name)
    if cli.emit_json(d):
        return
    console.print(f"[bold]{d['jobName']}[/]  {d['status']} ({d['phase']})  model: {d['importedModelName']}")
    console.print(
        f"progress: {_human_bytes(d['bytesDone'])} / {_human_bytes(d['bytesTotal'])}, "
        f"files {d['filesDone']}/{d['filesTotal']}, attempts {d['attempts']}"
    )
    if d.get("failureMessage"):
        console.print(f"[red]{d['failureMessage']}[/]", highlight=False)


@app.command()
@shared_options(endpoint=True)
def warm(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name or ARN."),
    copies: int = typer.Option(1, "--copies", "-c", min=1, max=64, help="How many copies to have running."),
) -> None:
    """Pre-start copies of a model so the first request does not wait for a cold start.

    Examples:

        outcrop warm my-llama

        outcrop warm my-llama --copies 2
    """
    cli = CliState.of(ctx)
    client = cli.client()
    with err_console.status(f"Starting {copies} cop{'y' if copies == 1 else 'ies'} of {name}..."):
        ready = client.warm(name, copies)
    _print_copies(cli, ready)


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    import datetime as dt

    seconds = (
        dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    ).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _print_copies(cli: CliState, copies: list[dict[str, Any]]) -> None:
    if cli.emit_json(copies):
        return
    if not copies:
        console.print("No copies are running (models scale to zero when idle).")
        return
    table = new_table("copy", "model", "state", "in flight", "age", "idle", "url", "pid")
    for c in copies:
        table.add_row(
            c["copyId"],
            c["modelName"],
            c["state"],
            str(c["inFlight"]),
            _age(c["startedAt"]),
            _age(c["lastUsedAt"]),
            c["url"] or "-",
            str(c["pid"] or "-"),
        )
    console.print(table)


@app.command("copies")
@shared_options(endpoint=True)
def list_copies(ctx: typer.Context) -> None:
    """List running model copies with their state, load and age.

    Example: outcrop copies
    """
    cli = CliState.of(ctx)
    client = cli.client()
    _print_copies(cli, client.copies())


def _print_new_key(cli: CliState, k: dict[str, Any]) -> None:
    if cli.emit_json(k):
        return
    console.print(f"[bold]{k['name']}[/] (shown once; store them now)")
    console.print(f"  aws_access_key_id     = {k['accessKeyId']}")
    console.print(f"  aws_secret_access_key = {k['secretAccessKey']}")
    console.print(f"  api key (Bearer)      = {k['apiKey']}")


@keys_app.command("create")
@shared_options(endpoint=True)
def keys_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Principal name (letters, digits, '-', '_')."),
    policy: str = typer.Option(
        "invoke-only",
        help="admin, invoke-only, read-only, or file://PATH of an IAM-style policy document (JSON).",
    ),
    model: list[str] = typer.Option([], "--model", "-m", help="invoke-only: limit to these models (repeat)."),
) -> None:
    """Create a principal with an access key pair and an API key.

    Examples:

        outcrop keys create app-backend --policy invoke-only --model my-llama

        outcrop keys create dashboards --policy read-only

        outcrop keys create ops --policy file://ops-policy.json
    """
    cli = CliState.of(ctx)
    client = cli.client()
    document = _policy_argument(policy)
    _print_new_key(cli, client.create_key(name, document, model))


def _policy_argument(policy: str) -> str | dict[str, Any]:
    """A built-in policy's name as it is, or the JSON document a ``file://`` path names (as the AWS CLI reads them)."""
    if not policy.startswith("file://"):
        return policy
    path = Path(policy[len("file://") :]).expanduser()
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidRequestError(f"Cannot read the policy file {path}: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise InvalidRequestError(f"The policy file {path} is not JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise InvalidRequestError(f"The policy file {path} must hold a JSON object with a 'Statement' list.")
    return document


@keys_app.command("ls")
@shared_options(endpoint=True)
def keys_ls(ctx: typer.Context) -> None:
    """List principals (never their secrets).

    Example: outcrop keys ls
    """
    cli = CliState.of(ctx)
    client = cli.client()
    keys = client.list_keys()
    if cli.emit_json(keys):
        return
    table = new_table("name", "access key id", "api key", "policy actions", "created")
    for k in keys:
        statements = k["policy"]["Statement"]
        statements = [statements] if isinstance(statements, dict) else statements
        actions = sorted(
            {
                ("not " if "NotAction" in st else "") + a
                for st in statements
                for a in _as_strings(st.get("Action", st.get("NotAction", [])))
            }
        )
        table.add_row(
            k["name"], k["accessKeyId"], f"{k['apiKeyPrefix']}...", ", ".join(actions)[:60], k["createdAt"]
        )
    console.print(table)


def _as_strings(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@keys_app.command("rm")
@shared_options(endpoint=True)
def keys_rm(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The principal's name (as `outcrop keys ls` shows it)."),
    yes: bool = YesOpt,
) -> None:
    """Delete a principal: its keys stop working at once.

    Example: outcrop keys rm ci-bot --yes
    """
    cli = CliState.of(ctx)
    client = cli.client()
    _confirm(f"Delete principal {name}? Its keys stop working at once.", yes)
    client.delete_key(name)
    console.print(f"Deleted {name}.")


@keys_app.command("rotate")
@shared_options(endpoint=True)
def keys_rotate(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The principal's name (as `outcrop keys ls` shows it)."),
) -> None:
    """Replace a principal's keys (same policy); the old ones stop working at once.

    Example: outcrop keys rotate ci-bot
    """
    cli = CliState.of(ctx)
    client = cli.client()
    _print_new_key(cli, client.rotate_key(name))


@app.command()
@shared_options
def demo(
    ctx: typer.Context,
    port: int = typer.Option(8080, help="Port to serve on (a free one is used if it is taken)."),
    keep_serving: bool = typer.Option(
        True, "--keep-serving/--exit", help="Keep the server up after the demo."
    ),
    build_model: Path | None = typer.Option(
        None,
        "--build-model",
        metavar="DIR",
        help="Only write the demo's tiny model (Llama architecture, random weights) into DIR, to import yourself.",
    ),
) -> None:
    """Start a server, build a tiny demo model (random weights), import it and invoke it through boto3 and OpenAI.

    Examples:

        outcrop demo --exit

        outcrop demo --build-model ./my-finetuned-llama
    """
    from outcrop.cli.demo import build_demo_model, cli_path, run_demo

    if build_model is not None:
        folder = build_model.expanduser().resolve()
        if folder.exists() and any(folder.iterdir()):
            _refuse(f"--build-model {build_model}: that folder is not empty; name a new or empty folder.")
        with err_console.status(f"Building a tiny model in {folder}..."):
            build_demo_model(folder)
        err_console.print(
            f"Built a tiny Llama-architecture model with random weights in {folder} (it answers gibberish; "
            f"it is for trying the flow). Import it: {cli_path()} import {build_model} --name my-llama",
            highlight=False,
        )
        return
    run_demo(CliState.of(ctx).config(), port=port, keep_serving=keep_serving, console=err_console)


app.command("bench")(bench_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
