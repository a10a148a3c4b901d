"""``outcrop batch`` as a user runs it: a real CLI process against a real server (null copies)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import tests.conftest as root_conftest
from tests.batch.conftest import prompt_record, read_jsonl, write_jsonl
from tests.batch.test_batch_survives_kill import _env
from tests.conftest import REPO, ServerProcess, boto3_client, import_and_wait

pytestmark = pytest.mark.e2e


def outcrop(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUTCROP_ENDPOINT": server.url, "COLUMNS": "200"}
    api_key = getattr(root_conftest, "TEST_API_KEY", None)
    if api_key:
        env["OUTCROP_API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-m", "outcrop", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_submit_wait_ls_show_and_stop(
    start_server: Callable[..., ServerProcess], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    server = start_server(**_env(delay_ms=5))
    import_and_wait(boto3_client("bedrock", server.url), tiny_model("llama"), "clim")
    write_jsonl(tmp_path / "in.jsonl", [prompt_record(i) for i in range(50)])

    done = outcrop(
        server,
        "batch",
        "submit",
        "--model",
        "clim",
        "--input",
        str(tmp_path / "in.jsonl"),
        "--output",
        str(tmp_path / "out"),
        "--name",
        "cli-job",
        "--wait",
    )
    assert done.returncode == 0, done.stderr
    assert "Completed" in done.stdout and "50 of 50 processed" in done.stdout
    assert "records" in done.stderr and "tok/s" in done.stderr  # the progress bar
    job_id = next(p.name for p in (tmp_path / "out").iterdir())
    assert f"Results: {tmp_path / 'out'}/{job_id}/" in done.stderr.replace("\n", "")  # where to look
    assert len(read_jsonl(tmp_path / "out" / job_id / "in.jsonl.out")) == 50
    assert (
        json.loads((tmp_path / "out" / job_id / "manifest.json.out").read_text())["successRecordCount"] == 50
    )

    listed = outcrop(server, "batch", "ls")
    assert listed.returncode == 0 and "cli-job" in listed.stdout and "50/50" in listed.stdout
    shown = outcrop(server, "batch", "show", "cli-job")
    assert shown.returncode == 0 and "InvokeModel" in shown.stdout
    assert f"{tmp_path / 'out'}/{job_id}/" in shown.stdout
    stopped = outcrop(server, "batch", "stop", "cli-job")
    assert stopped.returncode == 1
    assert (
        stopped.stderr.count("\n") == 1
        and "Completed" in stopped.stderr
        and "Traceback" not in stopped.stderr
    )

    bad = outcrop(
        server,
        "batch",
        "submit",
        "--model",
        "nosuch",
        "--input",
        str(tmp_path / "in.jsonl"),
        "--output",
        str(tmp_path / "out"),
    )
    assert bad.returncode == 1 and "nosuch" in bad.stderr and "Traceback" not in bad.stderr
    typo = outcrop(
        server, "batch", "submit", "-m", "clin", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out")
    )
    assert typo.returncode == 1 and "Did you mean 'clim'?" in typo.stderr.replace("\n", "")
    bad_name = outcrop(
        server, "batch", "submit", "-m", "clim", "-i", "x.jsonl", "-o", "out", "--name", "bad name!"
    )
    assert bad_name.returncode == 1 and "--name 'bad name!'" in bad_name.stderr
    assert "jobName" not in bad_name.stderr
