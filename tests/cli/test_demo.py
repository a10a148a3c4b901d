"""``outcrop demo`` and ``outcrop serve`` as a newcomer meets them: readable output, a sign-in link, no clobbering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from outcrop.cli.demo import readable
from outcrop.cli.running import running_server
from tests.cli.test_cli import outcrop
from tests.conftest import TEST_API_KEY, ServerProcess, free_port


def test_random_weight_answers_are_shown_as_plain_text() -> None:
    shown = readable("s\ufffd皅J \x1d import\x0e\n tes\U0001f8e3 \ufffd")

    assert shown == "“s皅J import tes”"  # U+1F8E3 is unassigned (category Cn): dropped too
    assert "\\x" not in shown and "\ufffd" not in shown
    assert readable("\ufffd\x1d\x0e") == "(only unprintable tokens)"
    assert len(readable("word " * 100)) <= 82


@pytest.mark.e2e
def test_serve_prints_a_sign_in_link_and_logs_the_first_start_as_info(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    log = server.log()

    assert f"{server.url}/console#key={TEST_API_KEY}" in log
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
