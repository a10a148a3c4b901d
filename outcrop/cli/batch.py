"""``outcrop batch``: submit, follow, list, show and stop batch inference jobs on a running server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from outcrop.cli.client import Client
from outcrop.cli.options import (
    CliState,
    check_name_option,
    console,
    err_console,
    new_table,
    shared_options,
)

TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}
# How often --wait asks for progress: smooth for a person, negligible for the server.
POLL_SECONDS = 0.5

batch_app = typer.Typer(
    help="Batch inference jobs: submit a .jsonl of records, follow it, list, show and stop jobs.",
    no_args_is_help=True,
)


@batch_app.callback()
@shared_options(endpoint=True)
def batch_options() -> None:
    # The shared options are accepted here too: `outcrop batch --endpoint URL ls`.
    pass


def _uri(value: str) -> str:
    return value if "://" in value else str(Path(value).expanduser().resolve())


@batch_app.command("submit")
@shared_options(endpoint=True)
def submit(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="Imported model name or ARN."),
    input_path: str = typer.Option(
        ...,
        "--input",
        "-i",
        help="A .jsonl file or a folder of them: local path (read by the server), file:// or s3://.",
    ),
    output: str = typer.Option(..., "--output", "-o", help="Output folder; results go to OUTPUT/JOB_ID/."),
    name: str | None = typer.Option(None, "--name", "-n", help="Job name (default: batch-MODEL-TIMESTAMP)."),
    converse: bool = typer.Option(
        False, "--converse", help="Records are Converse requests (default: InvokeModel bodies)."
    ),
    timeout_hours: int | None = typer.Option(
        None, "--timeout-hours", help="Expire the job if it has not started by then (24-168)."
    ),
    wait: bool = typer.Option(
        False, "--wait", "-w", help="Follow the job with a progress bar until it ends."
    ),
) -> None:
    """Submit a batch job; prints its ARN, or with --wait follows it to the end.

    Each input line is one record, as Bedrock's batch format:
    {"recordId": "r1", "modelInput": {"prompt": "Summarise: ...", "max_gen_len": 256}}
    (modelInput is an InvokeModel body, or a Converse request with --converse; a missing
    recordId gets one). Results: OUTPUT/JOB_ID/INPUT_FILE.out, one line per record with
    modelOutput or error, and manifest.json.out with the counts.

    Examples:

        outcrop batch submit --model my-llama --input ./prompts.jsonl --output ./results --wait

        outcrop batch submit -m my-llama -i s3://bucket/in/ -o s3://bucket/out/
    """
    if name is not None:
        check_name_option(name, "--name", job=True)
    cli = CliState.of(ctx)
    client = cli.client()
    stem = model.rsplit("/", 1)[-1][:40].rstrip("-_")  # the default name stays within 63 characters
    job_name = name or f"batch-{stem}-{time.strftime('%Y%m%d%H%M%S')}".replace("_", "-")
    body: dict[str, Any] = {
        "jobName": job_name,
        "modelId": model,
        "roleArn": "arn:aws:iam::000000000000:role/outcrop-batch",
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": _uri(input_path)}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": _uri(output)}},
        "modelInvocationType": "Converse" if converse else "InvokeModel",
    }
    if timeout_hours is not None:
        body["timeoutDurationInHours"] = timeout_hours
    arn = client.create_batch_job(**body)
    err_console.print(f"Batch job [bold]{job_name}[/] submitted: {arn}")
    if not wait:
        err_console.print(
            f"Results will be in {results_location(body, arn)} (follow it: outcrop batch show {job_name})"
        )
        console.print(arn)
        return
    job = _follow(client, arn)
    _print_job(cli, job)
    if job["status"] in ("Completed", "PartiallyCompleted", "Stopped"):
        err_console.print(f"Results: {results_location(job, arn)}", highlight=False)
    if job["status"] in ("Failed", "Expired"):
        err_console.print(
            f"[bold red]Batch job {job['status'].lower()}:[/] {job.get('message', '')}", highlight=False
        )
        raise typer.Exit(1)


def results_location(job: dict[str, Any], arn: str) -> str:
    """Where a job's output goes: OUTPUT/JOB_ID/ (one INPUT.out per input file, and manifest.json.out)."""
    output = str(job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]).rstrip("/")
    return f"{output}/{arn.rsplit('/', 1)[-1]}/"


def _follow(client: Client, arn: str) -> dict[str, Any]:
    """A progress bar (records done / total, output tokens/s, ETA) until the job ends."""
    columns = [
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records  {task.fields[tokens_per_second]:>7.1f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    started: tuple[float, int] | None = None
    rate = 0.0
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task("Submitted", total=None, tokens_per_second=0.0)
        while True:
            job = client.batch_job(arn)
            tokens = int(job.get("outputTokenCount", 0))
            if started is None and (job["status"] == "InProgress" or job["status"] in TERMINAL):
                started = (time.monotonic(), 0 if job["status"] in TERMINAL else tokens)
            if started is not None and job["status"] not in TERMINAL:
                elapsed = time.monotonic() - started[0]
                rate = (tokens - started[1]) / elapsed if elapsed > 0 else 0.0
            elif started is not None:  # the job's own figure: its output tokens over its run time
                rate = _job_rate(job) or rate
            progress.update(
                task,
                description=job["status"],
                completed=job.get("processedRecordCount", 0),
                total=job.get("totalRecordCount") or None,
                tokens_per_second=rate,
            )
            if job["status"] in TERMINAL:
                return job
            time.sleep(POLL_SECONDS)


def _job_rate(job: dict[str, Any]) -> float:
    """Output tokens/s over the job's run (submit to end), from its own timestamps; 0 if unknown."""
    from datetime import datetime

    try:
        start = datetime.fromisoformat(str(job["submitTime"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(job["endTime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    seconds = (end - start).total_seconds()
    return int(job.get("outputTokenCount", 0)) / seconds if seconds > 0 else 0.0


def _print_job(cli: CliState, job: dict[str, Any]) -> None:
    if cli.emit_json(job):
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("name", job.get("jobName")),
        ("arn", job.get("jobArn")),
        ("status", job.get("status")),
        ("model", job.get("modelId")),
        ("type", job.get("modelInvocationType")),
        ("input", job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]),
        ("output", job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]),
        ("results", results_location(job, str(job.get("jobArn", ""))) if job.get("jobArn") else None),
        (
            "records",
            f"{job.get('processedRecordCount', 0)} of {job.get('totalRecordCount', 0)} processed "
            f"({job.get('successRecordCount', 0)} ok, {job.get('errorRecordCount', 0)} failed)",
        ),
        ("tokens", f"{job.get('inputTokenCount', 0)} in, {job.get('outputTokenCount', 0)} out"),
        ("submitted", job.get("submitTime")),
        ("ended", job.get("endTime")),
        ("message", job.get("message")),
    ]
    for key, value in rows:
        if value is not None:
            table.add_row(key, str(value))
    console.print(table)


@batch_app.command("ls")
@shared_options(endpoint=True)
def list_jobs(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="Only jobs in this status (e.g. InProgress)."),
) -> None:
    """List batch jobs, newest first.

    Examples:

        outcrop batch ls

        outcrop batch ls --status Scheduled
    """
    cli = CliState.of(ctx)
    client = cli.client()
    jobs = client.list_batch_jobs(status)
    if cli.emit_json(jobs):
        return
    if not jobs:
        err_console.print("No batch jobs yet. Submit one with `outcrop batch submit`.")
        return
    table = new_table("name", "status", "model", "records", "submitted")
    for job in jobs:
        table.add_row(
            job["jobName"],
            job["status"],
            job["modelId"],
            f"{job.get('processedRecordCount', 0)}/{job.get('totalRecordCount', 0)}",
            job["submitTime"],
        )
    console.print(table)


@batch_app.command("show")
@shared_options(endpoint=True)
def show(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="Job ARN, id or name."),
) -> None:
    """Show a batch job: status, counters, tokens, input and output.

    Example:

        outcrop batch show my-batch-job
    """
    cli = CliState.of(ctx)
    client = cli.client()
    _print_job(cli, client.batch_job(job))


@batch_app.command("stop")
@shared_options(endpoint=True)
def stop(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="Job ARN, id or name."),
) -> None:
    """Stop a batch job: records in flight finish; outputs and the manifest hold what was processed.

    Example:

        outcrop batch stop my-batch-job
    """
    cli = CliState.of(ctx)
    client = cli.client()
    client.stop_batch_job(job)
    status = client.batch_job(job)["status"]
    err_console.print(f"Batch job [bold]{job}[/] is {status}.")
