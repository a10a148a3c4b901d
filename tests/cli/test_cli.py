"""The `outcrop` command as a user runs it: a real process against a real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_API_KEY, ServerProcess, free_port


def outcrop(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs the CLI as a user would, with the test servers' admin API key."""
    env = {**os.environ, "OUTCROP_API_KEY": TEST_API_KEY, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "outcrop", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,  # no terminal: deletions need --yes
    )


def test_help_lists_commands_with_examples() -> None:
    result = outcrop("--help")
    assert result.returncode == 0
    for command in ("serve", "import", "models", "jobs", "demo"):
        assert command in result.stdout
    assert "outcrop import ./my-llama --name my-llama" in result.stdout
    import_help = outcrop("import", "--help").stdout
    assert "Examples" in import_help and "--no-wait" in import_help


def test_no_server_is_one_red_line_not_a_traceback() -> None:
    result = outcrop("models", "--endpoint", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "No Outcrop server answers" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.e2e
def test_import_list_show_and_remove_through_the_cli(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    server = start_server()
    folder = tiny_model("qwen2")
    imported = outcrop("import", str(folder), "--name", "cli-qwen", "--endpoint", server.url)
    assert imported.returncode == 0, imported.stderr
    assert "qwen2" in imported.stdout and "Qwen2ForCausalLM" in imported.stdout
    assert "fetching" in imported.stderr or "done" in imported.stderr  # the progress bar's phases

    listed = outcrop("models", "--endpoint", server.url)
    assert "cli-qwen" in listed.stdout
    shown = outcrop("models", "show", "cli-qwen", "--endpoint", server.url)
    assert "parameters" in shown.stdout and "context length" in shown.stdout
    typo = outcrop("models", "show", "cli-qwne", "--endpoint", server.url)
    assert typo.returncode == 1 and "Did you mean 'cli-qwen'?" in typo.stderr.replace("\n", "")
    key_typo = outcrop("keys", "create", "app", "--model", "cli-qwne", "--endpoint", server.url)
    assert key_typo.returncode == 1 and "Did you mean 'cli-qwen'?" in key_typo.stderr.replace("\n", "")
    jobs = outcrop("jobs", "--endpoint", server.url)
    assert "Completed" in jobs.stdout

    removed = outcrop("models", "rm", "cli-qwen", "--yes", "--endpoint", server.url)
    assert removed.returncode == 0
    missing = outcrop("models", "show", "cli-qwen", "--endpoint", server.url)
    assert missing.returncode == 1 and "ResourceNotFoundException" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.e2e
def test_failed_import_prints_the_reasons_and_exits_1(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    server = start_server()
    folder = tiny_model()
    (folder / "config.json").write_text('{"model_type": "llama", "auto_map": {"AutoModel": "evil.Model"}}')
    result = outcrop("import", str(folder), "--name", "broken", "--endpoint", server.url)
    assert result.returncode == 1
    assert "Import failed" in result.stderr and "auto_map" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_no_wait_prints_the_job_arn(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    server = start_server()
    result = outcrop("import", str(tiny_model()), "--name", "later", "--no-wait", "--endpoint", server.url)
    assert result.returncode == 0
    assert result.stdout.strip().startswith("arn:aws:bedrock:")


@pytest.mark.e2e
def test_keys_are_created_listed_rotated_and_removed(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server()
    document = {"Statement": [{"Effect": "Allow", "Action": ["bedrock:ListImportedModels"], "Resource": "*"}]}
    (tmp_path / "policy.json").write_text(json.dumps(document))
    custom = outcrop(
        "keys", "create", "lister", "--policy", f"file://{tmp_path / 'policy.json'}", "--endpoint", server.url
    )
    assert custom.returncode == 0, custom.stderr
    missing = outcrop(
        "keys", "create", "x", "--policy", f"file://{tmp_path / 'absent.json'}", "--endpoint", server.url
    )
    assert missing.returncode == 1 and "Cannot read the policy file" in missing.stderr
    created = outcrop("keys", "create", "ci-bot", "--policy", "read-only", "--endpoint", server.url)
    assert created.returncode == 0, created.stderr
    assert "aws_secret_access_key" in created.stdout and "ocp-" in created.stdout
    as_json = json.loads(outcrop("--json", "keys", "ls", "--endpoint", server.url).stdout)
    assert {"ci-bot", "admin", "lister"} <= {k["name"] for k in as_json}
    assert json.loads(outcrop("--json", "copies", "--endpoint", server.url).stdout) == []
    listed = outcrop("keys", "ls", "--endpoint", server.url)
    assert "ci-bot" in listed.stdout and "admin" in listed.stdout
    assert "aws_secret_access_key" not in listed.stdout
    assert outcrop("keys", "rotate", "ci-bot", "--endpoint", server.url).returncode == 0
    assert (
        outcrop("keys", "rm", "ci-bot", "--endpoint", server.url).returncode == 1
    )  # no terminal: needs --yes
    assert outcrop("keys", "rm", "ci-bot", "--yes", "--endpoint", server.url).returncode == 0
    bad = outcrop("import", str(server.import_root), "--name", "bad name!", "--endpoint", server.url)
    assert bad.returncode == 1 and "[0-9a-zA-Z]" in bad.stderr  # error text is never read as markup
    assert "--name 'bad name!'" in bad.stderr and "jobName" not in bad.stderr  # the option the user typed
    denied = outcrop("models", "--endpoint", server.url, env={"OUTCROP_API_KEY": "ocp-wrong"})
    assert denied.returncode == 1 and "AccessDeniedException" in denied.stderr
    assert "$OUTCROP_API_KEY" in denied.stderr  # where the refused key came from

    other = tmp_path / "other-data"
    other.mkdir()
    (other / "credentials.json").write_text(json.dumps({"api_key": "ocp-of-another-server"}))
    stale = outcrop("models", "--endpoint", server.url, "--data-dir", str(other), env={"OUTCROP_API_KEY": ""})
    assert stale.returncode == 1 and "The API key is not valid" in stale.stderr
    message = stale.stderr.replace("\n", "")
    assert str(other / "credentials.json") in message and "--data-dir" in message


def test_serve_on_a_taken_port_fails_before_announcing_it_serves(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = outcrop(
            "serve", "--port", str(port), env={"OUTCROP_DATA_DIR": str(tmp_path / "data")}, timeout=60
        )
    assert result.returncode == 1, result.stderr
    assert "--port" in result.stderr and "serving on" not in result.stderr
