"""`outcrop models scaling` against a real server: show, set, and refusals as one red line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.test_cli import outcrop
from tests.conftest import ServerProcess, boto3_client, import_and_wait

pytestmark = pytest.mark.e2e


def test_scaling_is_shown_set_and_refused_with_the_fix(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path]
) -> None:
    server = start_server()
    import_and_wait(boto3_client("bedrock", server.url), tiny_model(), "cli-scaled")
    at = ("--endpoint", server.url)

    shown = outcrop("models", "scaling", "cli-scaled", *at)
    assert shown.returncode == 0, shown.stderr
    assert "0-1 copies (from the configuration), 0 running" in shown.stdout
    assert "scales to zero after 300 s idle" in shown.stdout

    set_both = outcrop("models", "scaling", "cli-scaled", "--min", "0", "--max", "3", *at)
    assert set_both.returncode == 0, set_both.stderr
    assert "0-3 copies (set through the API)" in set_both.stdout

    only_max = outcrop("models", "scaling", "cli-scaled", "--max", "2", "--json", *at)
    assert only_max.returncode == 0, only_max.stderr
    scaling = json.loads(only_max.stdout)
    assert (scaling["minCopies"], scaling["maxCopies"], scaling["source"]) == (0, 2, "api")

    refused = outcrop("models", "scaling", "cli-scaled", "--min", "3", "--max", "2", *at)
    assert refused.returncode == 1
    assert "raise maxCopies to at least 3" in refused.stderr and "Traceback" not in refused.stderr

    detail = outcrop("models", "show", "cli-scaled", *at)
    assert "scaling" in detail.stdout and "0-2 copies" in detail.stdout
