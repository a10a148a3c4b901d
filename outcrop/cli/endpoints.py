"""``outcrop endpoints``: the SageMaker-compatible endpoints of a running server, with their variants."""

from __future__ import annotations

from typing import Any

import typer

endpoints_app = typer.Typer(
    help="List SageMaker-compatible endpoints and their variants (create them with boto3 'sagemaker').",
    no_args_is_help=False,
)


def _cli() -> Any:
    from outcrop.cli import main  # late: main registers this sub-app

    return main


def _sagemaker(client: Any, operation: str, **body: Any) -> dict[str, Any]:
    """One SageMaker control-plane call (JSON 1.1: the operation goes in X-Amz-Target)."""
    return dict(
        client._call(
            "POST",
            "/",
            json=body,
            headers={"X-Amz-Target": f"SageMaker.{operation}", "Content-Type": "application/x-amz-json-1.1"},
        )
    )


def _endpoints(client: Any) -> list[dict[str, Any]]:
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
            except Exception:  # the config was deleted; the endpoint still lists
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
            out.append(detail)
        token = page.get("NextToken")
        if not token:
            return out


@endpoints_app.callback(invoke_without_command=True)
def endpoints_list(
    ctx: typer.Context,
    endpoint: str | None = typer.Option(
        None, "--endpoint", "-e", help="URL of the Outcrop server (default: $OUTCROP_ENDPOINT)."
    ),
) -> None:
    """List SageMaker-compatible endpoints, their status and variants.

    Examples:

        outcrop endpoints

        outcrop --json endpoints
    """
    if ctx.invoked_subcommand is not None:
        return
    main = _cli()
    client = main._client(endpoint)
    rows = main._run(lambda: _endpoints(client))
    if main.emit_json(rows):
        return
    if not rows:
        main.console.print(
            "No endpoints yet. Create one with boto3: sagemaker.create_model(...), create_endpoint_config(...), "
            "create_endpoint(...) (see docs/sagemaker.md)."
        )
        return
    table = main.new_table("name", "status", "config", "variants", "reason")
    for e in rows:
        variants = "\n".join(
            f"{v['VariantName']}: {v['ModelName']} (weight {v['Weight']}, {v['Capacity']})"
            for v in e["Variants"]
        )
        table.add_row(
            e["EndpointName"],
            e["EndpointStatus"],
            e["EndpointConfigName"],
            variants,
            e.get("FailureReason", ""),
        )
    main.console.print(table)
