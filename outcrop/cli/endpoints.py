"""``outcrop endpoints``: the SageMaker-compatible endpoints of a running server, with their variants.

Self-contained (its own client, options and error edge) so that it registers with one line and
does not depend on how the rest of the CLI shares its options.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from outcrop.cli.client import Client
from outcrop.cli.options import server_client
from outcrop.errors import OutcropError

# Piped or redirected output is as wide as its longest row, as in the other listings.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 4096)
err_console = Console(stderr=True, soft_wrap=True)

endpoints_app = typer.Typer(
    help="List SageMaker-compatible endpoints and their variants (create them with boto3 'sagemaker').",
    no_args_is_help=False,
)


def _sagemaker(client: Client, operation: str, **body: Any) -> dict[str, Any]:
    """One SageMaker control-plane call (JSON 1.1: the operation goes in X-Amz-Target)."""
    return dict(
        client._call(
            "POST",
            "/",
            json=body,
            headers={"X-Amz-Target": f"SageMaker.{operation}", "Content-Type": "application/x-amz-json-1.1"},
        )
    )


def _endpoints(client: Client) -> list[dict[str, Any]]:
    """Each endpoint with its variants (variant -> SageMaker model -> imported model, weight)."""
    out, token = [], None
    while True:
        page = _sagemaker(client, "ListEndpoints", MaxResults=100, **({"NextToken": token} if token else {}))
        for summary in page["Endpoints"]:
            detail = _sagemaker(client, "DescribeEndpoint", EndpointName=summary["EndpointName"])
            variants = []
            try:
                config = _sagemaker(
                    client, "DescribeEndpointConfig", EndpointConfigName=detail["EndpointConfigName"]
                )
                variants = config["ProductionVariants"]
            except OutcropError:  # the config was deleted; the endpoint still lists
                pass
            detail["Variants"] = [
                {
                    "VariantName": v["VariantName"],
                    "ModelName": v.get("ModelName"),
                    "Weight": v.get("InitialVariantWeight", 1.0),
                    "Capacity": (
                        f"serverless, max {v['ServerlessConfig']['MaxConcurrency']} concurrent"
                        if v.get("ServerlessConfig")
                        else f"{v.get('InitialInstanceCount', 0)} x {v.get('InstanceType') or 'copy'}"
                    ),
                }
                for v in variants
            ]
            detail["Components"] = _components(client, summary["EndpointName"])
            out.append(detail)
        token = page.get("NextToken")
        if not token:
            return out


def _figures(client: Client) -> list[dict[str, Any]] | None:
    """This gateway's invocation figures per endpoint and variant (None where the key may not read them)."""
    try:
        return list(client._call("GET", "/outcrop/endpoint-metrics")["endpoints"])
    except OutcropError:
        return None


def _figures_text(metrics: list[dict[str, Any]]) -> str:
    """One line per variant (or component): SageMaker's names, mean latencies in ms."""
    lines = []
    for m in metrics:
        latency = "" if m["ModelLatencyMs"] is None else f", model {m['ModelLatencyMs']:.1f} ms"
        if m["OverheadLatencyMs"] is not None:
            latency += f", overhead {m['OverheadLatencyMs']:.2f} ms"
        lines.append(
            f"{m['InferenceComponentName'] or m['VariantName']}: {m['Invocations']} "
            f"({m['Invocation4XXErrors']}/{m['Invocation5XXErrors']}){latency}"
        )
    return "\n".join(lines) or "0"


def _components(client: Client, endpoint: str) -> list[dict[str, Any]]:
    """The endpoint's inference components: name, model, copies, status."""
    out, token = [], None
    while True:
        page = _sagemaker(
            client,
            "ListInferenceComponents",
            EndpointNameEquals=endpoint,
            MaxResults=100,
            **({"NextToken": token} if token else {}),
        )
        for summary in page["InferenceComponents"]:
            detail = _sagemaker(
                client, "DescribeInferenceComponent", InferenceComponentName=summary["InferenceComponentName"]
            )
            runtime = detail.get("RuntimeConfig") or {}
            out.append(
                {
                    "InferenceComponentName": detail["InferenceComponentName"],
                    "VariantName": detail.get("VariantName"),
                    "ModelName": (detail.get("Specification") or {}).get("ModelName"),
                    "DesiredCopyCount": runtime.get("DesiredCopyCount"),
                    "CurrentCopyCount": runtime.get("CurrentCopyCount"),
                    "Status": detail.get("InferenceComponentStatus"),
                }
            )
        token = page.get("NextToken")
        if not token:
            return sorted(out, key=lambda c: str(c["InferenceComponentName"]))


@endpoints_app.callback(invoke_without_command=True)
def endpoints_list(
    ctx: typer.Context,
    endpoint: str | None = typer.Option(
        None, "--endpoint", "-e", help="URL of the Outcrop server (default: $OUTCROP_ENDPOINT)."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="The server's data folder (for its admin key)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the endpoints as JSON, for scripts."),
) -> None:
    """List SageMaker-compatible endpoints, their status, variants and inference components.

    Examples:

        outcrop endpoints

        outcrop endpoints --json
    """
    if ctx.invoked_subcommand is not None:
        return
    try:  # this command's error edge: one red line, never a traceback
        client = server_client(endpoint, data_dir)
        rows = _endpoints(client)
        figures = _figures(client)
    except OutcropError as exc:
        err_console.print("[bold red]error:[/] " + escape(exc.message), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for e in rows:
        e["Metrics"] = [m for m in figures or [] if m["EndpointName"] == e["EndpointName"]]
    if json_output:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    if not rows:
        console.print(
            "No endpoints yet. Create one with boto3: sagemaker.create_model(...), create_endpoint_config(...), "
            "create_endpoint(...) (see docs/sagemaker.md)."
        )
        return
    table = Table("name", "status", "config", "variants", "invocations (4xx/5xx), latency", "reason")
    for column in table.columns:
        column.overflow = "fold"
    for e in rows:
        variants = "\n".join(
            f"{v['VariantName']}: {v['ModelName'] or 'inference components'} (weight {v['Weight']}, {v['Capacity']})"
            for v in e["Variants"]
        )
        for c in e["Components"]:
            variants += (
                f"\n  component {c['InferenceComponentName']}: {c['ModelName']} "
                f"({c['CurrentCopyCount']}/{c['DesiredCopyCount']} copies, {c['Status']})"
            )
        table.add_row(
            e["EndpointName"],
            e["EndpointStatus"],
            e["EndpointConfigName"],
            variants,
            _figures_text(e["Metrics"]) if figures is not None else "-",
            e.get("FailureReason", ""),
        )
    console.print(table)
