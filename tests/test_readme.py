"""The README's two commands are the real entry points, and they work as written."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerProcess


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
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0


@pytest.mark.e2e
def test_readme_python_example_runs_against_a_real_server(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    """The README's Python block, with only the server's address, key file and model path swapped in."""
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code, "README.md has a python example"
    server = start_server()
    source = code.group(1)
    for old, new in (
        (
            'os.path.expanduser("~/.outcrop/credentials.json")',
            repr(str(server.data_dir / "credentials.json")),
        ),
        ("http://127.0.0.1:8080", server.url),
        ("/data/models/my-llama", str(tiny_model())),
    ):
        assert old in source, f"the README example no longer contains {old!r}"
        source = source.replace(old, new)
    namespace: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    body = namespace["body"]
    assert isinstance(body, dict) and body["generation"] == body["outputs"][0]["text"]
