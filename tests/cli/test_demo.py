"""``outcrop demo`` and ``outcrop serve`` as a newcomer meets them: readable output, a sign-in link, no clobbering."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from outcrop.cli.demo import console_line, readable
from outcrop.cli.running import running_server
from outcrop.config import OutcropConfig
from tests.cli.test_cli import outcrop
from tests.conftest import (
    REPO,
    SERVER_START_TIMEOUT_SECONDS,
    TEST_API_KEY,
    ServerProcess,
    free_port,
    server_env,
)


def test_random_weight_answers_are_shown_as_plain_text() -> None:
    shown = readable("s\ufffd皅J \x1d import\x0e\n tes\U0001f8e3 \ufffd")

    assert shown == "“s皅J import tes”"  # U+1F8E3 is unassigned (category Cn): dropped too
    assert "\\x" not in shown and "\ufffd" not in shown
    assert readable("\ufffd\x1d\x0e") == "(only unprintable tokens)"
    assert len(readable("word " * 100)) <= 82


def test_demo_prints_the_sign_in_link_only_to_a_terminal(tmp_path: Path) -> None:
    config = OutcropConfig(data_dir=tmp_path)
    config.credentials_path.write_text(json.dumps({"api_key": "ocp-demo-key"}))
    url = "http://127.0.0.1:8080"

    to_a_person = console_line(config, url, terminal=True)
    to_a_log = console_line(config, url, terminal=False)

    assert f"{url}/console#key=ocp-demo-key" in to_a_person
    assert "ocp-demo-key" not in to_a_log and f"{url}/console" in to_a_log
    assert str(config.credentials_path) in to_a_log  # where the key is, instead


@pytest.mark.e2e
def test_serve_in_a_terminal_prints_a_sign_in_link(tmp_path: Path) -> None:
    port = free_port()
    primary, secondary = pty.openpty()  # stderr is a terminal, as when a person runs it
    proc = subprocess.Popen(
        [sys.executable, "-m", "outcrop", "--data-dir", str(tmp_path / "data"), "serve", "--port", str(port)],
        env=server_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        cwd=REPO,
    )
    os.close(secondary)
    output = b""
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while b"/console" not in output and time.monotonic() < deadline and proc.poll() is None:
            if select.select([primary], [], [], 0.5)[0]:
                output += os.read(primary, 65536)
        time.sleep(0.5)
        while select.select([primary], [], [], 0.2)[0]:
            output += os.read(primary, 65536)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        os.close(primary)
    text = re.sub(r"\s+", "", re.sub(r"\x1b\[[0-9;]*m", "", output.decode(errors="replace")))
    assert f"127.0.0.1:{port}/console#key={TEST_API_KEY}" in text, output


@pytest.mark.e2e
def test_serve_logging_to_a_file_names_the_credentials_file_not_the_key(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    log = server.log()

    assert f"{server.url}/console (sign in with an API key" in log
    assert TEST_API_KEY not in log  # server logs hold no secrets
    assert "created the admin principal" in log
    assert "WARNING outcrop.auth" not in log and "INFO    outcrop.auth: created the admin" in log
    assert running_server(server.data_dir) is not None  # who serves this data dir
    server.stop()
    assert running_server(server.data_dir) is None


@pytest.mark.e2e
def test_demo_refuses_to_replace_the_models_of_a_server_serving_its_data_dir(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()

    result = outcrop("demo", "--exit", "--data-dir", str(server.data_dir), "--port", str(free_port()))

    assert result.returncode == 1, result.stderr
    message = result.stderr.replace("\n", "")
    assert "already serving the data dir" in message and "demo-llama" in message
    assert "demo --data-dir" in message  # what to do instead
    assert "Starting Outcrop" not in result.stderr
    assert server.proc is not None and server.proc.poll() is None


def test_build_model_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")

    result = outcrop("demo", "--build-model", str(tmp_path))

    assert result.returncode == 1 and "not empty" in result.stderr
