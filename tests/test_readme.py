"""The README's two commands are the real entry points, and they work as written."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, SERVER_START_TIMEOUT_SECONDS, free_port


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must open with a bash block of two commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert text.index("```bash") < 200, "the commands must come first"
    assert readme_commands() == ["bash scripts/demo.sh", "bash scripts/test.sh"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci


def test_test_command_runs_pytest_after_lint() -> None:
    script = (REPO / "scripts" / "test.sh").read_text()
    assert "ruff check" in script and "mypy outcrop" in script and "pytest" in script
    assert script.index("bootstrap.sh") < script.index("-m pytest")


@pytest.mark.e2e
def test_demo_command_serves_imports_and_shows_the_model(tmp_path: Path) -> None:
    """Runs `bash scripts/demo.sh` exactly as written; it serves until interrupted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    env["OUTCROP_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        readme_commands()[0].split(),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 240
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Outcrop is serving" in line:
                break
        output = "".join(lines)
        assert "Outcrop is serving" in output, output
        assert "modelArchitecture: llama" in output
        assert "instructSupported: True" in output
        assert "boto3 bedrock-runtime invoke_model" in output
        assert "openai chat.completions.create" in output
        assert "Traceback" not in output
        assert "random weights, so its answers are gibberish" in output
        assert "\\x" not in output and "\ufffd" not in output  # the gibberish is shown as plain text
        assert "Writing model shards" not in output and "WARNING outcrop.auth" not in output
        # Piped output is a log: it names the credentials file; the #key= link goes only to a terminal
        # (tests/cli/test_demo.py).
        assert "/console (sign in with the api_key in" in output and "#key=" not in output
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0


def use_it_blocks() -> list[tuple[str, str]]:
    """The code blocks of the README's "Use it" section, in order: (language, text)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Use it") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def test_readme_commands_use_the_venv_cli_and_document_the_first_hour() -> None:
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = line.split("#")[0]
            assert not re.search(r"(^|[\s;&|(])outcrop\s", command), f"bare `outcrop` (not on PATH): {line}"
    assert "source .venv/bin/activate" in text  # how to type plain `outcrop` instead
    assert "--build-model" in text and "random weights" in text  # how to get a model to try
    assert "outcrop bench" in text and "--plot" in text
    assert "/console#key=" in text
    for span in re.findall(r"`([^`\n]+)`", text):  # inline commands with options are pasted too
        assert not re.match(r"outcrop\s.*--", span), f"bare `outcrop` (not on PATH): {span}"
    languages = [language for language, _ in use_it_blocks()]
    assert languages == ["bash", "bash", "python", "bash"]


def _clone_like(root: Path) -> Path:
    """A folder laid out like a fresh clone after bootstrap: ``.venv/bin/outcrop`` and ``.venv/bin/python``."""
    clone = root / "clone"
    bin_dir = clone / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, command in (("outcrop", f"{sys.executable} -m outcrop"), ("python", sys.executable)):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(0o755)
    return clone


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_readme_use_it_blocks_run_in_order_against_a_real_server(tmp_path: Path) -> None:
    """Every command of "Use it" as written, then the Python example, on a server with default settings.

    Only the port differs (a free one instead of 8080: OUTCROP_SERVER__PORT for the server,
    OUTCROP_ENDPOINT for the CLI, the URL in the Python example); HOME is a fresh folder, so
    ``~/.outcrop`` is the default data dir and the default allowed roots apply.
    """
    clone = _clone_like(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    env.update(
        HOME=str(home),
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
        OUTCROP_SERVER__PORT=str(port),
        OUTCROP_ENDPOINT=url,
    )
    server: subprocess.Popen[bytes] | None = None
    server_log = tmp_path / "serve.log"
    outputs: list[str] = []
    try:
        for language, block in use_it_blocks():
            if language == "python":
                assert "http://127.0.0.1:8080" in block
                (clone / "try_outcrop.py").write_text(block.replace("http://127.0.0.1:8080", url))
                done = subprocess.run(
                    [".venv/bin/python", "try_outcrop.py"],
                    cwd=clone,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=400,
                )
                assert done.returncode == 0, done.stdout + done.stderr
                for expected in ("imported arn:aws:bedrock:", "invoke_model:", "converse:", "openai stream:"):
                    assert expected in done.stdout, done.stdout
                continue
            for line in block.splitlines():
                if not line.split("#")[0].strip():
                    continue
                if " serve" in line.split("#")[0]:
                    with server_log.open("wb") as log:
                        server = subprocess.Popen(
                            line,
                            shell=True,
                            cwd=clone,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    _wait_healthy(url, server, server_log)
                    continue
                done = subprocess.run(
                    line,
                    shell=True,
                    executable="/bin/bash",
                    cwd=clone,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=400,
                )
                assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
                outputs.append(done.stdout + done.stderr)
        everything = "".join(outputs)
        assert "Traceback" not in everything
        assert "Writing model shards" not in everything
        assert (clone / "bench.png").stat().st_size > 0
        results = list((clone / "results").glob("*/prompts.jsonl.out"))
        assert len(results) == 1 and "modelOutput" in results[0].read_text()
        assert f"Results: {clone / 'results'}/{results[0].parent.name}/" in everything.replace("\n", "")
        assert f"{url}/console" in server_log.read_text()  # (the #key= link only in a terminal)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the README's server did not answer at {url}:\n{log.read_text()}")
