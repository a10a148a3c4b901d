"""`outcrop bench` as a user runs it, against a real server whose copies are null copies."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outcrop.cli.main import app
from outcrop.config import OutcropConfig
from tests.conftest import ServerProcess, boto3_client, import_and_wait

NULL_COPY_TEMPLATE = (
    "python -m outcrop.serving.nullcopy --port {port} --host {host} --served-name {served_name}"
)
# The load carries no credentials of its own: run the server open where it has an auth switch.
OPEN_SERVER = {"OUTCROP_AUTH__ENABLED": "false"} if "auth" in OutcropConfig.model_fields else {}


@pytest.mark.e2e
def test_bench_prints_the_case_study_table_and_writes_a_png(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    server = start_server(
        OUTCROP_SERVING__LAUNCHER="command",
        OUTCROP_SERVING__COMMAND_TEMPLATE=NULL_COPY_TEMPLATE,
        **OPEN_SERVER,
    )
    import_and_wait(boto3_client("bedrock", server.url), tiny_model(), "bench-null")
    plot = tmp_path / "bench.png"

    # In-process (CliRunner), which saves an interpreter start; test_cli.py covers the real process.
    result = CliRunner().invoke(
        app,
        ["bench", "bench-null", "--concurrency", "1,3", "--requests", "6", "--max-tokens", "3",
         "--plot", str(plot), "--endpoint", server.url],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    out = result.stdout
    for column in ("concurrency", "p95 latency", "requests/minute", "tokens/s", "copies at end"):
        assert column in out
    rows = [line.split("│") for line in out.splitlines() if line.count("│") >= 6]
    cells = [[c.strip() for c in row[1:-1]] for row in rows]
    data = [row for row in cells if row[0].isdigit()]
    assert [row[0] for row in data] == ["1", "3"]
    assert all(float(row[3].replace(",", "")) > 0 for row in data)  # tokens/s
    assert all(row[4] == "1" for row in data)  # the warmed-up copy is still running
    assert "requests per level: 6, 6" in out and "failed" not in out
    png = plot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (960, 440)
