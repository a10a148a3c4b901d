"""The shared options (before or after the subcommand) and the CLI's one error edge."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import outcrop.cli
from outcrop.cli.main import app
from tests.conftest import (
    REPO,
    SERVER_START_TIMEOUT_SECONDS,
    TEST_API_KEY,
    ServerProcess,
    free_port,
    server_env,
)

WITH_KEY = {"OUTCROP_API_KEY": TEST_API_KEY}


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--data-dir", "{data}", "--endpoint", "{url}", "models"],
        ["models", "--data-dir", "{data}", "--endpoint", "{url}"],
        ["--data-dir", "{data}", "models", "show", "m", "-e", "{url}"],
        ["batch", "ls", "--endpoint", "{url}", "--data-dir", "{data}"],
        ["keys", "--endpoint", "{url}", "ls", "--data-dir", "{data}"],
        ["batch", "--data-dir", "{data}", "show", "j", "-e", "{url}"],
    ],
    ids=["before", "after", "split", "nested-after", "keys-group", "batch-group"],
)
def test_data_dir_and_endpoint_are_taken_before_or_after_the_subcommand(
    args: list[str], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    data = tmp_path / "elsewhere"

    code, _, stderr = invoke(*(a.format(data=data, url=url) for a in args), env={"OUTCROP_API_KEY": ""})

    assert code == 1
    assert f"{data / 'credentials.json'} does not exist" in stderr.replace("\n", "")  # --data-dir was read
    assert f"No Outcrop server answers at {url}" in stderr  # --endpoint was read
    assert "Traceback" not in stderr


def test_an_outcrop_error_is_one_red_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "policy.json"

    code, stdout, stderr = invoke("keys", "create", "app", "--policy", f"file://{missing}", env=WITH_KEY)

    assert code == 1 and stdout == ""
    assert stderr.strip().splitlines() == [
        f"error: Cannot read the policy file {missing}: No such file or directory."
    ]


def test_deleting_without_a_terminal_or_yes_is_refused_at_the_edge() -> None:
    code, _, stderr = invoke(
        "models", "rm", "m", "--endpoint", f"http://127.0.0.1:{free_port()}", env=WITH_KEY
    )

    assert code == 1
    assert "error: Delete model m: nobody can confirm (no terminal); add --yes." in stderr


@pytest.mark.e2e
def test_json_after_the_subcommand_prints_the_api_fields(shared_server: ServerProcess) -> None:
    before = invoke("--json", "keys", "ls", "--endpoint", shared_server.url, env=WITH_KEY)
    after = invoke("keys", "ls", "--endpoint", shared_server.url, "--json", env=WITH_KEY)

    assert before[0] == after[0] == 0, before[2] + after[2]
    assert json.loads(before[1]) == json.loads(after[1])
    assert all("accessKeyId" in key for key in json.loads(after[1]))


@pytest.mark.e2e
def test_serve_takes_data_dir_after_the_subcommand(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "outcrop", "serve", "--data-dir", str(data), "--port", str(port)],
            env=server_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        healthy = False
        while not healthy and proc.poll() is None and time.monotonic() < deadline:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.1)
        assert healthy, log_path.read_text()
        assert f"data: {data}" in log_path.read_text()
        assert any(data.iterdir())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_no_cli_module_imports_the_main_module_back() -> None:
    package = Path(outcrop.cli.__file__).parent
    importers = [
        path.name
        for path in sorted(package.glob("*.py"))
        if path.name != "main.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and (
            node.module == "outcrop.cli.main"
            or (node.module == "outcrop.cli" and any(a.name == "main" for a in node.names))
        )
    ]
    assert importers == []


def _command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += _command_paths(sub, (*path, name))
    return paths


def test_help_pages_show_no_placeholders_in_braces_and_no_bool_on_flags() -> None:
    import typer.main

    paths = _command_paths(typer.main.get_command(app))
    assert ("bench",) in paths and ("models", "rm") in paths

    for path in paths:
        code, stdout, stderr = invoke(*path, "--help", env={"COLUMNS": "200"})
        assert code == 0, (path, stderr)
        usage = next(line for line in stdout.splitlines() if "Usage:" in line)
        assert "{" not in usage, (path, usage)
        assert "<bool>" not in stdout, path
    _, bench_help, _ = invoke("bench", "--help", env={"COLUMNS": "200"})
    assert "bench [OPTIONS] MODEL" in bench_help
