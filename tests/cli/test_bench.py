"""`outcrop bench` as a user runs it, against a real server whose copies are null copies."""

from __future__ import annotations

import csv
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outcrop.cli.bench import BenchRun, LevelResult, results_rows, write_csv, write_plot
from outcrop.cli.main import app
from outcrop.config import OutcropConfig
from outcrop.errors import OutcropError
from tests.conftest import ServerProcess, boto3_client, import_and_wait

NULL_COPY_TEMPLATE = (
    "python -m outcrop.testing.nullcopy --port {port} --host {host} --served-name {served_name}"
)
# The load carries no credentials of its own: run the server open where it has an auth switch.
OPEN_SERVER = {"OUTCROP_AUTH__ENABLED": "false"} if "auth" in OutcropConfig.model_fields else {}


@pytest.mark.e2e
def test_bench_prints_the_case_study_table_and_writes_a_png_and_a_csv(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    server = start_server(
        OUTCROP_SERVING__LAUNCHER="command",
        OUTCROP_SERVING__COMMAND_TEMPLATE=NULL_COPY_TEMPLATE,
        **OPEN_SERVER,
    )
    import_and_wait(boto3_client("bedrock", server.url), tiny_model(), "bench-null")
    plot, table = tmp_path / "bench.png", tmp_path / "bench.csv"

    # In-process (CliRunner), which saves an interpreter start; test_cli.py covers the real process.
    result = CliRunner().invoke(
        app,
        ["bench", "bench-null", "--concurrency", "1,3", "--requests", "6", "--max-tokens", "3",
         "--plot", str(plot), "--csv", str(table), "--endpoint", server.url],
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
    rows = list(csv.DictReader(table.open()))
    assert [row["concurrency"] for row in rows] == ["1", "3"]
    assert all(float(row["tokens_per_second"]) > 0 and row["errors"] == "0" for row in rows)


def a_run(**overrides: object) -> BenchRun:
    levels = [
        LevelResult(concurrency=c, latencies_seconds=[0.1 * c] * 4, completion_tokens=12 * c, seconds=1.0)
        for c in (1, 4, 16)
    ]
    return BenchRun(**{"endpoint": "http://gw", "model": "m", "max_tokens": 3, "levels": levels, **overrides})  # type: ignore[arg-type]


def test_results_rows_carry_the_table_numbers_unrounded() -> None:
    rows = results_rows(a_run())

    assert [row["concurrency"] for row in rows] == [1, 4, 16]
    assert rows[1]["p95_latency_seconds"] == pytest.approx(0.4)
    assert rows[1]["tokens_per_second"] == 48.0 and rows[1]["requests_per_minute"] == 240.0


def test_csv_has_one_row_per_level(tmp_path: Path) -> None:
    write_csv(tmp_path / "r.csv", a_run())

    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [row["concurrency"] for row in rows] == ["1", "4", "16"]


def test_plot_is_a_960_by_440_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")

    write_plot(tmp_path / "p.png", a_run())

    png = (tmp_path / "p.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (960, 440)


def test_plot_without_matplotlib_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)

    with pytest.raises(OutcropError, match=r"pip install 'outcrop\[plot\]'"):
        write_plot(tmp_path / "p.png", a_run())
    assert not (tmp_path / "p.png").exists()
