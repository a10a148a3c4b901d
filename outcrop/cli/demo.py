"""``outcrop demo``: the whole import flow on a tiny generated model, through the real boto3 client."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from outcrop.auth.bootstrap import read_credentials
from outcrop.cli.running import running_server
from outcrop.config import OutcropConfig
from outcrop.envs import subprocess_env
from outcrop.errors import ConflictError, InternalError, ServiceUnavailableError

DEMO_MODEL_NAME = "demo-llama"
# How long the demo waits for its server to answer /health; the first start imports torch.
SERVER_START_TIMEOUT_SECONDS = 120


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        s.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as the server binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InternalError(f"The demo server exited with code {proc.returncode}; its log is above.")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServiceUnavailableError(
        f"The demo server did not become healthy within {SERVER_START_TIMEOUT_SECONDS} s."
    )


def _credentials(config: OutcropConfig) -> dict[str, str]:
    """The admin credentials the server wrote on its first start (or placeholders when auth is off)."""
    return read_credentials(config) or {
        "aws_access_key_id": "none",
        "aws_secret_access_key": "none",
        "api_key": "none",
    }


def _bedrock_client(url: str, config: OutcropConfig) -> Any:
    import boto3

    creds = _credentials(config)
    return boto3.client(
        "bedrock",
        endpoint_url=url,
        region_name=config.aws.region,
        aws_access_key_id=creds["aws_access_key_id"],
        aws_secret_access_key=creds["aws_secret_access_key"],
    )


def run_demo(config: OutcropConfig, *, port: int, keep_serving: bool, console: Console) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _run_demo(config, port=port, keep_serving=keep_serving, console=console)
    except (ClientError, BotoCoreError) as exc:
        raise InternalError(f"The demo's boto3 call failed: {exc}") from None


def build_demo_model(path: Path) -> Path:
    """The demo's model: Llama architecture, random weights (it answers gibberish), about 2 MB."""
    from outcrop.testing.tiny_models import build_tiny_model

    return build_tiny_model(path, family="llama", hidden_size=128, intermediate_size=256, num_layers=2)


def readable(text: str, max_chars: int = 80) -> str:
    """A random-weight model's answer as plain text: no control characters, no broken bytes, one line."""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch != "\ufffd" and (ch.isspace() or unicodedata.category(ch)[0] != "C")
    )
    line = " ".join(kept.split())
    if len(line) > max_chars:
        line = line[: max_chars - 1] + "…"
    return f"“{line}”" if line else "(only unprintable tokens)"


def _refuse_if_served(data_dir: Path) -> None:
    """The demo deletes and re-imports demo-llama: never under a server that is serving this data dir."""
    other = running_server(data_dir)
    if other is None:
        return
    raise ConflictError(
        f"An Outcrop server (pid {other.pid}, {other.url}) is already serving the data dir {data_dir}; "
        f"the demo would delete and re-import its model {DEMO_MODEL_NAME}. Stop that server first, or run the "
        f"demo on a data dir of its own: {cli_path()} demo --data-dir {data_dir.parent / 'outcrop-demo'}"
    )


def _run_demo(config: OutcropConfig, *, port: int, keep_serving: bool, console: Console) -> None:
    data_dir = config.resolved_data_dir
    _refuse_if_served(data_dir)
    chosen = _free_port(port)
    if chosen != port:
        console.print(f"      (port {port} is in use, so the demo uses {chosen}; pick one with --port)")
    port = chosen
    url = f"http://127.0.0.1:{port}"
    source = data_dir / "demo" / "tiny-llama"

    console.print(f"[bold]1/5[/] Starting Outcrop on {url} (data dir {data_dir})")
    cmd = [sys.executable, "-m", "outcrop", "--data-dir", str(data_dir), "serve", "--port", str(port)]
    if config.store.database_url:
        cmd[3:3] = ["--database-url", config.store.database_url]
    server = subprocess.Popen(cmd, env=subprocess_env(), start_new_session=True)
    try:
        _wait_healthy(url, server)
        if not (source / "config.json").exists():
            console.print(
                f"[bold]2/5[/] Building a tiny Llama-architecture model (random weights) in {source}"
            )
            build_demo_model(source)
        else:
            console.print(f"[bold]2/5[/] Reusing the tiny demo model in {source}")

        bedrock = _bedrock_client(url, config)
        with contextlib.suppress(bedrock.exceptions.ResourceNotFoundException):
            bedrock.delete_imported_model(modelIdentifier=DEMO_MODEL_NAME)
        console.print("[bold]3/5[/] Importing it with boto3: bedrock.create_model_import_job(...)")
        job_name = f"demo-import-{int(time.time())}"
        job_arn = bedrock.create_model_import_job(
            jobName=job_name,
            importedModelName=DEMO_MODEL_NAME,
            roleArn="arn:aws:iam::000000000000:role/outcrop-demo",
            modelDataSource={"s3DataSource": {"s3Uri": str(source)}},
        )["jobArn"]
        console.print(f"      job {job_arn}")
        while (job := bedrock.get_model_import_job(jobIdentifier=job_arn))["status"] == "InProgress":
            time.sleep(0.2)
        if job["status"] != "Completed":
            raise InternalError(f"The demo import failed: {job.get('failureMessage')}")
        model = bedrock.get_imported_model(modelIdentifier=DEMO_MODEL_NAME)
        console.print("[bold]4/5[/] Imported model, as bedrock.get_imported_model returns it:")
        for key in (
            "modelName",
            "modelArn",
            "modelArchitecture",
            "instructSupported",
            "customModelUnits",
            "creationTime",
        ):
            console.print(f"      {key}: {model.get(key)}")
        _invoke(url, config, console)
        if keep_serving:
            cli = cli_path()
            console.print(
                f"\nTry it: [bold]{cli} --data-dir {data_dir} models show {DEMO_MODEL_NAME} --endpoint {url}[/]\n"
                f"Credentials (admin; keep them safe): {config.credentials_path}\n"
                + console_line(config, url, console.is_terminal),
                highlight=False,
            )
            stop = _install_stop_handlers()
            console.print(f"[bold green]Outcrop is serving on {url}[/] - press Ctrl-C to stop.")
            while not stop["now"] and server.poll() is None:
                time.sleep(0.2)
        else:
            console.print("[bold green]Demo complete.[/]")
    finally:
        _stop(server)


def console_line(config: OutcropConfig, url: str, terminal: bool) -> str:
    """The web console; to a terminal, a ready sign-in link with the admin's key in its #fragment.

    As ``outcrop serve`` does: the key is printed only to a person, not into a file or a pipe (a
    log, which travels and is kept); a log names the credentials file instead. The fragment never
    leaves the browser, and the page moves the key into the tab's sessionStorage at once.
    """
    page = f"{url}/console"
    if not config.auth.enabled:
        return f"Console: [bold]{page}[/]"
    api_key = (read_credentials(config) or {}).get("api_key")
    if not terminal or not api_key:
        return f"Console: [bold]{page}[/] (sign in with the api_key in {config.credentials_path})"
    return f"Console, signed in (the key after # stays in your browser): [bold]{page}#key={api_key}[/]"


def cli_path() -> str:
    """How to run this CLI again: the virtual environment's script when there is one (not on PATH)."""
    beside = Path(sys.executable).parent / "outcrop"
    return str(beside) if beside.exists() else "outcrop"


def _invoke(url: str, config: OutcropConfig, console: Console) -> None:
    """Ask the model through both client libraries, exactly as users' code would."""
    import json

    import boto3
    from botocore.config import Config
    from openai import OpenAI

    console.print("[bold]5/5[/] Invoking it (the first call starts a copy: a cold start, retried by boto3)")
    creds = _credentials(config)
    runtime = boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name=config.aws.region,
        aws_access_key_id=creds["aws_access_key_id"],
        aws_secret_access_key=creds["aws_secret_access_key"],
        config=Config(retries={"mode": "standard", "total_max_attempts": 15}, read_timeout=300),
    )
    started = time.monotonic()
    response = runtime.invoke_model(
        modelId=DEMO_MODEL_NAME,
        body=json.dumps({"prompt": "Hello, Outcrop!", "max_gen_len": 24, "temperature": 0}),
    )
    answer = json.loads(response["body"].read())
    console.print(
        "      (The demo model has random weights, so its answers are gibberish: the point is the path.)"
    )
    console.print(
        f"      boto3 bedrock-runtime invoke_model ({time.monotonic() - started:.1f} s, "
        f"{answer.get('generation_token_count', '?')} tokens): {readable(answer['generation'])}",
        highlight=False,
        markup=False,
    )
    client = OpenAI(base_url=f"{url}/v1", api_key=creds["api_key"])
    chat = client.chat.completions.create(
        model=DEMO_MODEL_NAME, messages=[{"role": "user", "content": "Hello, Outcrop!"}], max_tokens=24
    )
    console.print(
        f"      openai chat.completions.create ({chat.usage.completion_tokens if chat.usage else '?'} tokens): "
        f"{readable(chat.choices[0].message.content or '')}",
        highlight=False,
        markup=False,
    )


def _install_stop_handlers() -> dict[str, bool]:
    """Ctrl-C / SIGTERM end the demo cleanly (exit 0) once it is serving."""
    stop = {"now": False}

    def _handler(_sig: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
